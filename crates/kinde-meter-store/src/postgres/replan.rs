//! The writer's statements prepared again from time to time, so that their
//! plans follow the tables' sizes.
//!
//! The writer's sessions keep generic plans (`pool::Role::Writer`), made once
//! per prepared statement from what the planner knows at that moment. A table
//! created empty is planned as tiny (a sequential scan joined by hash), and
//! the plan stays while the session lives; PostgreSQL plans again only when
//! the table is analyzed, which with autovacuum off (as on the machines these
//! tests and benchmarks run on) is never. Measured, keyed single records the
//! usual way at 64 connections: 2.7 K/s, with 3 052 sequential scans of
//! `idempotency_keys` reading 153 M rows in a run of 100 000 (BENCHMARKS.md,
//! session 16). A plan made again sees the table's current size (the planner
//! scales its row estimate by the relation's current pages) and probes the
//! primary key once the table is large; while it is small, the scan is the
//! cheaper plan and is kept.
//!
//! A connection's statements are also prepared all at once before its first
//! batch, so that a batch sent in one flight never prepares one of its
//! statements in the middle of the flight (which would send it after COMMIT).

use std::{collections::HashMap, hash::Hash, time::Duration};

use tokio::time::Instant;

/// When each of the writer's connections last had its statements prepared.
pub(super) struct Plans<K = deadpool_postgres::ObjectId> {
    planned: HashMap<K, Planned>,
}

struct Planned {
    at: Instant,
    batches: u32,
    /// Batches until the next time: [`Plans::FIRST_BATCHES`], doubled each
    /// time up to [`Plans::EVERY_BATCHES`], so that plans follow a table
    /// that grows from empty closely while it is young.
    next: u32,
}

impl<K> Default for Plans<K> {
    fn default() -> Self {
        Plans {
            planned: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq> Plans<K> {
    /// Batches after which a connection's statements are first prepared
    /// again.
    const FIRST_BATCHES: u32 = 8;
    /// Most batches after which they are.
    const EVERY_BATCHES: u32 = 1024;
    /// Time after which they are, whatever the number of batches.
    const EVERY: Duration = Duration::from_secs(10);
    /// Connections remembered at most (the writer has two).
    const CONNECTIONS: usize = 16;

    /// Counts a batch on connection `conn` at `now`, and tells whether its
    /// statements should be prepared (again) first: before its first batch,
    /// then after 8, 16, 32, … batches up to every [`Self::EVERY_BATCHES`],
    /// and at least every [`Self::EVERY`].
    pub(super) fn due(&mut self, conn: K, now: Instant) -> bool {
        if self.planned.len() >= Self::CONNECTIONS && !self.planned.contains_key(&conn) {
            self.planned.clear();
        }
        let next = match self.planned.get_mut(&conn) {
            Some(p) if p.batches < p.next && now < p.at + Self::EVERY => {
                p.batches += 1;
                return false;
            }
            Some(p) => (p.next * 2).min(Self::EVERY_BATCHES),
            None => Self::FIRST_BATCHES,
        };
        self.planned.insert(
            conn,
            Planned {
                at: now,
                batches: 1,
                next,
            },
        );
        true
    }

    /// Forgets `conn` (its statements could not all be prepared): its next
    /// batch prepares them again.
    pub(super) fn forget(&mut self, conn: K) {
        self.planned.remove(&conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_before_a_connections_first_batch_then_by_batches_or_time() {
        let mut plans = Plans::<u32>::default();
        let start = Instant::now();
        let mut due_at = Vec::new();
        for batch in 0..5000 {
            if plans.due(1, start) {
                due_at.push(batch);
            }
        }
        assert_eq!(
            due_at,
            [0, 8, 24, 56, 120, 248, 504, 1016, 2040, 3064, 4088],
            "after 8, 16, … 1024 batches, then every 1024"
        );
        assert!(!plans.due(1, start));
        assert!(plans.due(2, start), "another connection's first batch");
        assert!(!plans.due(2, start + Duration::from_secs(9)));
        assert!(plans.due(2, start + Plans::<u32>::EVERY), "after EVERY");
        assert!(!plans.due(1, start + Duration::from_secs(1)));
    }
}
