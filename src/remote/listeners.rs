//! Who listens on a local TCP port, from `/proc/net/tcp` and `/proc/net/tcp6`.
//!
//! The default token file of `kernelgate serve` is chosen by port. Before the token goes to a
//! loopback URL, every socket listening on that port must belong to this user: otherwise
//! another user could listen on another loopback address (`[::1]:PORT`, `127.0.0.2:PORT`), or
//! on the port of a host that crashed and left its token file, and receive the token.

/// The owners (uids) of the sockets listening on `port`, in the tables' text. Pure.
pub fn listening_uids(tables: &[&str], port: u16) -> Vec<u32> {
    let want = format!("{port:04X}");
    let mut uids = Vec::new();
    for table in tables {
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid ...
        for line in table.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(uid)) =
                (fields.get(1), fields.get(3), fields.get(7))
            else {
                continue;
            };
            let local_port = local.rsplit(':').next().unwrap_or("");
            if *state == "0A" && local_port.eq_ignore_ascii_case(&want) {
                if let Ok(uid) = uid.parse() {
                    uids.push(uid);
                }
            }
        }
    }
    uids
}

/// Whether something listens on `port` and all of it belongs to this process's user.
/// False when the tables cannot be read (the token then needs `--token-file`).
pub fn port_is_ours(port: u16) -> bool {
    let me = kernelgate_zmq::files::euid();
    let v4 = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let v6 = std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
    let uids = listening_uids(&[&v4, &v6], port);
    !uids.is_empty() && uids.iter().all(|&u| u == me)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:49B1 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 100 0 0 10 0
   1: 0100007F:49B1 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 20 4 30 10 -1
   2: 0200007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 3 1 0 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:49B1 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 4 1 0 100 0 0 10 0
";

    #[test]
    fn listeners_by_port_with_their_owners() {
        // 0x49B1 = 18865: ours on 127.0.0.1, a stranger's on [::1]; the connected socket
        // (state 01) does not count.
        assert_eq!(listening_uids(&[TCP], 18865), vec![1000]);
        assert_eq!(listening_uids(&[TCP, TCP6], 18865), vec![1000, 1001]);
        assert_eq!(listening_uids(&[TCP], 8080), vec![1001]);
        assert!(listening_uids(&[TCP], 1).is_empty());
        assert!(listening_uids(&["garbage", "x\n1 2"], 18865).is_empty());
    }
}
