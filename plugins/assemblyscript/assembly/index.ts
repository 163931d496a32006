// as_header_filter: the AssemblyScript twin of plugins/rust/header_filter, written with
// @solo-io/proxy-runtime 0.1.8 (the AssemblyScript Proxy-Wasm SDK). It reads one request
// header, counts requests in the counter `header_filter_requests` and adds headers to the
// response. Default first response header: `x-wasm-filter: assemblyscript`.
// See ../README.md for the exact behaviour and the SDK's quirks.

// The SDK's exports: proxy_abi_version_0_2_0, malloc, proxy_on_* callbacks.
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext,
  Context,
  registerRootContext,
  FilterHeadersStatusValues,
  LogLevelValues,
  WasmResultValues,
  stream_context,
  log,
} from "@solo-io/proxy-runtime";
import {
  BufferTypeValues,
  HeaderMapTypeValues,
  MetricTypeValues,
  define_metric,
  increment_metric,
} from "@solo-io/proxy-runtime/runtime";
import * as imports from "@solo-io/proxy-runtime/imports";
import { free } from "@solo-io/proxy-runtime/malloc";
import { FilterConfig, parseConfig } from "./config";

/** Name of the counter incremented for every request. */
const REQUESTS_METRIC = "header_filter_requests";

/** Root ids this plugin answers to (the SDK matches the `plugin_root_id` property exactly). */
const ROOT_IDS: string[] = ["", "header_filter", "as_header_filter"];

// === host buffers ==============================================================================

/**
 * Out-parameters for host calls returning bytes. The host allocates the bytes through the
 * SDK's exported `malloc` (an AssemblyScript ArrayBuffer of the requested size) and writes
 * their address and length here. Unlike the SDK's own wrappers, both are zeroed before each
 * call, so a host answering OK without writing them (cpp-host does so for empty buffers)
 * reads as "no bytes" instead of the previous call's (already released) buffer.
 */
class HostBuffer {
  ptr: usize = 0;
  size: usize = 0;

  reset(): void {
    this.ptr = 0;
    this.size = 0;
  }

  ptrAddress(): usize {
    return changetype<usize>(this) + offsetof<HostBuffer>("ptr");
  }

  sizeAddress(): usize {
    return changetype<usize>(this) + offsetof<HostBuffer>("size");
  }

  /** Copies out the host's bytes (at most the allocation) and releases the allocation. */
  take(): ArrayBuffer {
    let ptr = this.ptr;
    let size = this.size;
    this.reset();
    let allocated = changetype<ArrayBuffer>(ptr).byteLength;
    let n = size < <usize>allocated ? <i32>size : allocated;
    let copy = new ArrayBuffer(n);
    memory.copy(changetype<usize>(copy), ptr, <usize>n);
    free(ptr);
    return copy;
  }
}

let hostBuffer = new HostBuffer();

/** The plugin configuration (buffer 7), as the Rust SDK reads it: start 0, max_size u32::MAX. */
function getPluginConfiguration(): ArrayBuffer {
  hostBuffer.reset();
  let status = imports.proxy_get_buffer_bytes(
    BufferTypeValues.PluginConfiguration,
    0,
    u32.MAX_VALUE,
    hostBuffer.ptrAddress(),
    hostBuffer.sizeAddress(),
  );
  if (status != WasmResultValues.Ok || hostBuffer.ptr == 0) {
    hostBuffer.reset();
    return new ArrayBuffer(0);
  }
  return hostBuffer.take();
}

/**
 * One request header, as the Rust SDK's get_http_request_header: NOT_FOUND (or any other
 * non-OK status) → null; OK with no data → "".
 */
function getRequestHeader(name: string): string | null {
  let key = String.UTF8.encode(name);
  hostBuffer.reset();
  let status = imports.proxy_get_header_map_value(
    HeaderMapTypeValues.RequestHeaders,
    changetype<usize>(key),
    key.byteLength,
    hostBuffer.ptrAddress(),
    hostBuffer.sizeAddress(),
  );
  if (status != WasmResultValues.Ok) {
    hostBuffer.reset();
    return null;
  }
  if (hostBuffer.ptr == 0) {
    hostBuffer.reset();
    return "";
  }
  return String.UTF8.decode(hostBuffer.take());
}

/** The Rust SDK's `Status` Debug names, for the define_metric error log. */
function statusName(status: u32): string {
  switch (status) {
    case 0: return "Ok";
    case 1: return "NotFound";
    case 2: return "BadArgument";
    case 3: return "SerializationFailure";
    case 4: return "ParseFailure";
    case 7: return "Empty";
    case 8: return "CasMismatch";
    case 10: return "InternalFailure";
    default: return status.toString();
  }
}

// === contexts ==================================================================================

/** What every HTTP context of a configured root shares. */
class Settings {
  config: FilterConfig;
  requests_metric: u32;

  constructor(config: FilterConfig, requests_metric: u32) {
    this.config = config;
    this.requests_metric = requests_metric;
  }
}

class HeaderFilterRoot extends RootContext {
  settings: Settings | null = null;

  constructor(context_id: u32) {
    super(context_id);
  }

  // Replaces the SDK's onConfigure, which passes configuration_size as the size pointer of
  // proxy_get_buffer_bytes (the host writes the size to that address) and keeps the
  // configuration as a string.
  onConfigure(configuration_size: u32): bool {
    let parsed = parseConfig(getPluginConfiguration());
    let config = parsed.config;
    if (config === null) {
      log(LogLevelValues.error, "header_filter: bad configuration: " + parsed.error);
      return false;
    }
    let metric = define_metric(MetricTypeValues.Counter, REQUESTS_METRIC);
    if (metric.result != WasmResultValues.Ok) {
      log(
        LogLevelValues.error,
        "header_filter: cannot define " + REQUESTS_METRIC + ": " + statusName(<u32>metric.result),
      );
      return false;
    }
    this.settings = new Settings(config, metric.metric_id);
    return true;
  }

  createContext(context_id: u32): Context {
    return new HeaderFilter(context_id, this, this.settings);
  }
}

class HeaderFilter extends Context {
  /** The root's settings when this context was created; null if it was never configured. */
  settings: Settings | null;
  /** The configured request header's value, once the request headers were seen. */
  request_value: string | null = null;

  constructor(context_id: u32, root_context: HeaderFilterRoot, settings: Settings | null) {
    super(context_id, root_context);
    this.settings = settings;
  }

  onRequestHeaders(_headers: u32, _end_of_stream: bool): FilterHeadersStatusValues {
    let settings = this.settings;
    if (settings === null) return FilterHeadersStatusValues.Continue;
    let name = settings.config.request_header;
    let value = getRequestHeader(name);
    this.request_value = value;
    increment_metric(settings.requests_metric, 1);
    let shown = value === null ? "-" : value;
    log(LogLevelValues.debug, "header_filter: " + name + "=" + shown);
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(_headers: u32, _end_of_stream: bool): FilterHeadersStatusValues {
    let settings = this.settings;
    if (settings === null) return FilterHeadersStatusValues.Continue;
    let names = settings.config.response_header_names;
    let values = settings.config.response_header_values;
    for (let i = 0; i < names.length; i++) {
      stream_context.headers.response.add(names[i], values[i]);
    }
    let value = this.request_value;
    stream_context.headers.response.add("x-request-header", value === null ? "-" : value);
    return FilterHeadersStatusValues.Continue;
  }
}

for (let i = 0; i < ROOT_IDS.length; i++) {
  registerRootContext((context_id: u32): RootContext => {
    return new HeaderFilterRoot(context_id);
  }, ROOT_IDS[i]);
}
