//! kinde-meter-server
