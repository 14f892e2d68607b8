//! kinde-meter-store
