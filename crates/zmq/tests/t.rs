#[test] fn c(){ assert!(kernelgate_zmq::has_curve()); }
