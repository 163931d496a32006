//! Plugin metrics: ids carry their type in the low 2 bits, as in Envoy.

use wasmproxy_abi::{MetricType, Status};
use wasmtime::{Caller, Linker};

use crate::memory::{check_allowed, finish, read, write_u32, write_u64};
use crate::state::VmState;

const TYPE_MASK: u32 = 3;
const ID_INCREMENT: u32 = 4;

pub(super) fn define(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: Caller<'_, VmState>, kind: i32, name_ptr: i32, name_len: i32, id_ptr: i32| {
            finish((|| {
                check_allowed(&c, "proxy_define_metric")?;
                let kind = MetricType::from_u32(kind as u32).ok_or(Status::BadArgument)?;
                if name_len as u32 as usize > wasmproxy_abi::limits::NAME_MAX_BYTES {
                    return Err(Status::BadArgument.into());
                }
                let name = String::from_utf8_lossy(&read(&mut c, name_ptr, name_len)?).into_owned();
                let state = c.data_mut();
                let metric = state.shared.metrics.define(kind, &name).ok_or(Status::InternalFailure)?;
                let slot = &mut state.next_metric_id[kind as usize];
                let id = *slot;
                *slot = slot.wrapping_add(ID_INCREMENT);
                state.metrics.insert(id, metric);
                write_u32(&mut c, id_ptr, id)
            })())
        },
    )?;
    linker.func_wrap("env", "proxy_increment_metric", |c: Caller<'_, VmState>, id: i32, delta: i64| {
        finish((|| {
            check_allowed(&c, "proxy_increment_metric")?;
            let id = id as u32;
            let kind = id & TYPE_MASK;
            if kind != MetricType::Counter as u32 && kind != MetricType::Gauge as u32 {
                return Err(Status::BadArgument.into());
            }
            let metric = c.data().metrics.get(&id).ok_or(Status::NotFound)?;
            if kind == MetricType::Counter as u32 && delta <= 0 {
                return Err(Status::BadArgument.into());
            }
            metric.add(delta);
            Ok(())
        })())
    })?;
    linker.func_wrap("env", "proxy_record_metric", |c: Caller<'_, VmState>, id: i32, value: i64| {
        finish((|| {
            check_allowed(&c, "proxy_record_metric")?;
            let metric = c.data().metrics.get(&(id as u32)).ok_or(Status::NotFound)?;
            metric.record(value as u64);
            Ok(())
        })())
    })?;
    linker.func_wrap("env", "proxy_get_metric", |mut c: Caller<'_, VmState>, id: i32, ptr: i32| {
        finish((|| {
            check_allowed(&c, "proxy_get_metric")?;
            let id = id as u32;
            let kind = id & TYPE_MASK;
            if kind != MetricType::Counter as u32 && kind != MetricType::Gauge as u32 {
                return Err(Status::BadArgument.into());
            }
            let value = c.data().metrics.get(&id).ok_or(Status::NotFound)?.get();
            write_u64(&mut c, ptr, value)
        })())
    })?;
    Ok(())
}
