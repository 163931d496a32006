;; Hostcalls with pointers and lengths outside linear memory (one page = 65536 bytes).
;; Each status is logged as two digits ("06"), in order, for the test to read.
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $get_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_header_map_pairs" (func $set_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 8192))
  (data (i32.const 200) "x-user")
  (data (i32.const 300) "plugin_name")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $p))
  (func $put (param $i i32) (param $status i32)
    (i32.store8 (i32.const 500) (i32.add (i32.const 48) (i32.div_u (local.get $status) (i32.const 10))))
    (i32.store8 (i32.const 501) (i32.add (i32.const 48) (i32.rem_u (local.get $status) (i32.const 10))))
    (drop (call $log (i32.const 2) (i32.const 500) (i32.const 2))))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    ;; 0: message past the end of memory
    (call $put (i32.const 0) (call $log (i32.const 2) (i32.const 65530) (i32.const 100)))
    ;; 1: a length that wraps around
    (call $put (i32.const 1) (call $log (i32.const 2) (i32.const 16) (i32.const -1)))
    ;; 2: key out of bounds
    (call $put (i32.const 2) (call $get_header (i32.const 0) (i32.const 70000) (i32.const 4) (i32.const 100) (i32.const 104)))
    ;; 3: good key, return pointers out of bounds
    (call $put (i32.const 3) (call $get_header (i32.const 0) (i32.const 200) (i32.const 6) (i32.const 65535) (i32.const 104)))
    ;; 4: value out of bounds
    (call $put (i32.const 4) (call $add_header (i32.const 0) (i32.const 200) (i32.const 6) (i32.const -16) (i32.const 8)))
    ;; 5: pairs return pointer out of bounds
    (call $put (i32.const 5) (call $get_pairs (i32.const 0) (i32.const 99999) (i32.const 104)))
    ;; 6: pairs input out of bounds
    (call $put (i32.const 6) (call $set_pairs (i32.const 0) (i32.const 65000) (i32.const 4096)))
    ;; 7: buffer return out of bounds (the VM configuration is never empty here)
    (call $put (i32.const 7) (call $get_buffer (i32.const 6) (i32.const 0) (i32.const 100) (i32.const 100) (i32.const 65534)))
    ;; 8: property path out of bounds
    (call $put (i32.const 8) (call $get_property (i32.const 65500) (i32.const 100) (i32.const 100) (i32.const 104)))
    ;; 9: good property, bad return pointer
    (call $put (i32.const 9) (call $get_property (i32.const 300) (i32.const 11) (i32.const 66000) (i32.const 104)))
    ;; 10: shared data value out of bounds
    (call $put (i32.const 10) (call $set_shared (i32.const 200) (i32.const 6) (i32.const 65000) (i32.const 1000) (i32.const 0)))
    ;; 11: WASI fd_write with an iovec out of bounds (errno 21 = EFAULT)
    (call $put (i32.const 11) (call $fd_write (i32.const 1) (i32.const 65532) (i32.const 1) (i32.const 104)))
    (i32.const 0)))
