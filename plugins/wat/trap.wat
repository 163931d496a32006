;; Traps in proxy_on_request_headers.
(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func $deep_in_the_plugin (unreachable))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $deep_in_the_plugin)
    (i32.const 0)))
