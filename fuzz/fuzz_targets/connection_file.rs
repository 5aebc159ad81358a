//! Connection files: parse; what parses must survive to_json_with_secrets -> from_json unchanged,
//! and its Debug output must not show the key.
#![no_main]

use kernelgate_wire::ConnectionInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(info) = ConnectionInfo::from_json(data) else {
        return;
    };
    let written = info.to_json_with_secrets();
    match ConnectionInfo::from_json(&written) {
        Ok(again) => assert_eq!(again, info, "connection file round trip changed it"),
        Err(e) => panic!("written connection file does not parse: {e}"),
    }
    for channel in info.ports().map(|(c, _)| c) {
        let _ = info.endpoint(channel);
    }
    let _ = info.validate_for_connect();
    let _ = info.signer(true);
    // The key must not show in Debug output (unless it also is the text of a field that is shown,
    // as written or as Debug escapes it: an ip with `\` shows as `\\`).
    if let Ok(key) = std::str::from_utf8(info.key.expose()) {
        let shows = |field: &str| field.contains(key) || format!("{field:?}").contains(key);
        let shown_elsewhere = shows(&info.ip)
            || shows(&info.kernel_name)
            || info.curve_publickey.as_deref().is_some_and(|p| shows(p));
        if key.len() >= 8 && !shown_elsewhere {
            assert!(
                !format!("{info:?}").contains(key),
                "Debug output shows the key"
            );
        }
    }
});
