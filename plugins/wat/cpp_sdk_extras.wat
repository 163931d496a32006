;; The non-spec callbacks the C++ and AssemblyScript SDKs export
;; (proxy_validate_configuration, proxy_on_request_metadata, proxy_on_response_metadata),
;; WASI imported as `wasi_unstable`, as AssemblyScript modules do, and the Emscripten
;; leftovers some C++ SDK builds import.
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "wasi_unstable" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "env" "emscripten_notify_memory_growth" (func $notify_growth (param i32)))
  (import "env" "pthread_equal" (func $pthread_equal (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "validate_configuration")
  (data (i32.const 100) "request_metadata")
  (data (i32.const 200) "response_metadata")
  (data (i32.const 300) "stdout via wasi_unstable\n")
  ;; iovec at 400: {ptr=300, len=25}
  (data (i32.const 400) "\2c\01\00\00\19\00\00\00")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_validate_configuration") (param $ctx i32) (param $size i32) (result i32)
    ;; Emscripten leftovers: present, harmless.
    (call $notify_growth (i32.const 0))
    (if (i32.ne (call $pthread_equal (i32.const 3) (i32.const 3)) (i32.const 1)) (then (unreachable)))
    (if (i32.ne (call $pthread_equal (i32.const 3) (i32.const 4)) (i32.const 0)) (then (unreachable)))
    (drop (call $log (i32.const 2) (i32.const 0) (i32.const 22)))
    ;; accept only a configuration of exactly 2 bytes
    (i32.eq (local.get $size) (i32.const 2)))
  (func (export "proxy_on_request_metadata") (param i32 i32) (result i32)
    (drop (call $log (i32.const 2) (i32.const 100) (i32.const 16)))
    (drop (call $fd_write (i32.const 1) (i32.const 400) (i32.const 1) (i32.const 500)))
    (i32.const 0))
  (func (export "proxy_on_response_metadata") (param i32 i32) (result i32)
    (drop (call $log (i32.const 2) (i32.const 200) (i32.const 17)))
    (i32.const 0)))
