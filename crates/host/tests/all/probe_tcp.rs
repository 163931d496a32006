//! Network (TCP) filter callbacks and the data buffers, with the Rust SDK probe.

use serde_json::json;
use wasmproxy_host::abi::{FilterStatus, PeerType, StreamType};
use wasmproxy_host::{ContextKind, StreamAction};

use crate::support::*;

#[test]
fn a_connection_goes_through_every_tcp_callback() {
    let mut h = Harness::probe(json!({
        "kind": "stream",
        "phases": {
            "downstream_data": [["get_buffer", "2", "0", "100"], ["set_buffer", "2", "0", "100", "REWRITTEN"], ["continue", "2"], ["continue", "3"]],
            "upstream_data": [["get_buffer", "3", "0", "100"], ["set_buffer", "3", "100", "0", "+tail"], ["close", "3"]],
        },
        "returns": {"downstream_data": "pause"},
    }));
    h.take_logs();
    let ctx = h.vm.create_context(h.root, ContextKind::Tcp).unwrap();
    assert_eq!(h.vm.on_new_connection(ctx).unwrap(), FilterStatus::Continue);
    h.vm.stream(ctx).unwrap().downstream_data = Some(b"hello upstream".to_vec());
    assert_eq!(h.vm.on_downstream_data(ctx, false).unwrap(), FilterStatus::StopIteration);
    assert_eq!(h.vm.stream(ctx).unwrap().downstream_data.as_deref(), Some(&b"REWRITTEN"[..]));
    h.vm.stream(ctx).unwrap().upstream_data = Some(b"reply".to_vec());
    assert_eq!(h.vm.on_upstream_data(ctx, true).unwrap(), FilterStatus::Continue);
    assert_eq!(h.vm.stream(ctx).unwrap().upstream_data.as_deref(), Some(&b"reply+tail"[..]));
    h.vm.on_upstream_connection_close(ctx, PeerType::Unknown).unwrap();
    h.vm.on_downstream_connection_close(ctx, PeerType::Remote).unwrap();
    h.vm.finish_stream(ctx).unwrap();
    assert_eq!(
        h.take_logs(),
        vec![
            "create_stream_context ctx=2 root=1",
            "new_connection ctx=2",
            "downstream_data ctx=2 size=14 eos=false",
            "downstream_data get_buffer 2 0 100 => status=0 value=hello upstream",
            "downstream_data set_buffer 2 0 100 REWRITTEN => status=0",
            "downstream_data continue 2 => status=0",
            "downstream_data continue 3 => status=12",
            "upstream_data ctx=2 size=5 eos=true",
            "upstream_data get_buffer 3 0 100 => status=0 value=reply",
            "upstream_data set_buffer 3 100 0 +tail => status=0",
            "upstream_data close 3 => status=0",
            "upstream_close ctx=2 peer=0",
            "downstream_close ctx=2 peer=2",
            "done ctx=2",
            "log ctx=2",
            "delete ctx=2",
        ]
    );
    assert_eq!(
        h.vm.take_actions(),
        vec![(ctx, StreamAction::Continue(StreamType::Downstream)), (ctx, StreamAction::Close(StreamType::Upstream))]
    );
}
