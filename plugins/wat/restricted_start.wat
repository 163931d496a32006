;; Calls proxy_get_property during _initialize, which Envoy does not allow.
(module
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "plugin_name")
  (data (i32.const 100) "logging is allowed at start-up")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "_initialize")
    (drop (call $log (i32.const 2) (i32.const 100) (i32.const 30)))
    (drop (call $get_property (i32.const 0) (i32.const 11) (i32.const 200) (i32.const 204)))))
