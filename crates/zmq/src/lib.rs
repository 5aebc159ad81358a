//! tmp
#![allow(unsafe_code)]
use libsodium_sys as _;
extern "C" { fn zmq_has(c: *const std::ffi::c_char) -> i32; }
/// x
pub fn has_curve() -> bool { unsafe { zmq_has(c"curve".as_ptr()) == 1 } }
