//! kinde-sdk
