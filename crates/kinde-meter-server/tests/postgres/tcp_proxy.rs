//! A TCP proxy between a server and PostgreSQL that can make the database
//! unreachable on demand, without touching the database itself (which other
//! tests share): [`Mode::Refuse`] closes every connection and every new one at
//! once (a stopped or restarting server), [`Mode::Blackhole`] lets connections
//! hang without an answer (a network dropping packets).

use std::{net::SocketAddr, sync::Arc};

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// What the proxy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward.
    Open,
    /// Close every connection, existing and new.
    Refuse,
    /// Stop forwarding and answer nothing; connections stay open.
    Blackhole,
}

/// A running proxy; stops when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// A proxy on 127.0.0.1 forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(watch::Sender::new(Mode::Open));
        let task = tokio::spawn({
            let mode = mode.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(serve(client, upstream, mode.subscribe()));
                }
            }
        });
        TcpProxy { addr, mode, task }
    }

    /// Where to connect instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes what the proxy does, for existing connections too.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.set(Mode::Refuse);
    }
}

/// One proxied connection: forwarded while the mode is `Open`; closed on
/// `Refuse`; on `Blackhole`, held silent until the mode changes, then closed
/// (as a connection that lost packets for long would be).
async fn serve(mut client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let current = *mode.borrow_and_update();
    match current {
        Mode::Refuse => return,
        Mode::Blackhole => {
            let _ = mode.changed().await;
            return;
        }
        Mode::Open => {}
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let silenced = tokio::select! {
        _ = copy_bidirectional(&mut client, &mut server) => false,
        next = async {
            mode.wait_for(|m| *m != Mode::Open)
                .await
                .map(|m| *m)
                .unwrap_or(Mode::Refuse)
        } => next == Mode::Blackhole,
    };
    if silenced {
        let _ = mode.changed().await;
    }
}
