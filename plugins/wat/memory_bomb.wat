;; Grows its memory 16 MiB at a time, touching each new page, until refused.
(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (local $old i32)
    (loop $more
      (local.set $old (memory.grow (i32.const 256)))
      (if (i32.eq (local.get $old) (i32.const -1)) (then (unreachable)))
      (i32.store (i32.mul (local.get $old) (i32.const 65536)) (i32.const 1))
      (br $more))
    (i32.const 0)))
