module wasmproxy.test/plugins/go

go 1.24
