"""Every function of include/m2c.h has a Python counterpart (a test that
fails when the header grows and the binding does not)."""

import pathlib
import re

import m2c

HEADER = pathlib.Path(__file__).resolve().parents[3] / "include" / "m2c.h"

# C function -> the Python name that calls it. Struct initialisers are
# called inside the methods that fill those structs.
WRAPPED = {
    "m2c_version": "version",
    "m2c_abi_version": "abi_version",
    "m2c_status_str": "status_str",
    "m2c_last_error": "last_error",
    "m2c_config_init": "Config",
    "m2c_config_preset": "Config.preset",
    "m2c_config_bytes": "Config.bytes",
    "m2c_create": "Cache",
    "m2c_destroy": "Cache.close",
    "m2c_get_config": "Cache.config",
    "m2c_set_num_threads": "Cache.set_num_threads",
    "m2c_set_conv_layout": "Cache.set_conv_layout",
    "m2c_get_conv_layout": "Cache.conv_layout",
    "m2c_conv_heads": "Cache.conv_heads",
    "m2c_set_snapshot_format": "Cache.set_snapshot_format",
    "m2c_get_snapshot_format": "Cache.snapshot_format",
    "m2c_describe": "Cache.describe",
    "m2c_update_conv": "Cache.update_conv",
    "m2c_set_conv": "Cache.set_conv",
    "m2c_set_ssm": "Cache.set_ssm",
    "m2c_update_ssm": "Cache.update_ssm",
    "m2c_read_conv": "Cache.read_conv",
    "m2c_read_ssm": "Cache.read_ssm",
    "m2c_reset": "Cache.reset",
    "m2c_advance": "Cache.advance",
    "m2c_position": "Cache.position",
    "m2c_conv_view": "Cache.conv_view",
    "m2c_ssm_view": "Cache.ssm_view",
    "m2c_conv_args_init": "Cache.conv_step",
    "m2c_ssm_args_init": "Cache.ssm_step",
    "m2c_ssm_io_init": "Cache.ssm_step",
    "m2c_conv_step": "Cache.conv_step",
    "m2c_ssm_step": "Cache.ssm_step",
    "m2c_conv_prefill": "Cache.conv_prefill",
    "m2c_ssm_prefill": "Cache.ssm_prefill",
    "m2c_spec_reserve": "Cache.spec_reserve",
    "m2c_spec_begin": "Cache.spec_begin",
    "m2c_conv_verify": "Cache.conv_verify",
    "m2c_ssm_verify": "Cache.ssm_verify",
    "m2c_spec_commit": "Cache.spec_commit",
    "m2c_slot_acquire": "Cache.slot_acquire",
    "m2c_slot_release": "Cache.slot_release",
    "m2c_slots_in_use": "Cache.slots_in_use",
    "m2c_copy_slots": "Cache.copy_slots",
    "m2c_count_nonfinite": "Cache.count_nonfinite",
    "m2c_check_finite": "Cache.check_finite",
    "m2c_slot_snapshot_size": "Cache.slot_snapshot_size",
    "m2c_slot_save": "Cache.slot_save",
    "m2c_slot_load": "Cache.slot_load",
    "m2c_save_file": "Cache.save_file",
    "m2c_load_file": "Cache.load_file",
    "m2c_store_config_init": "Store",
    "m2c_lookup_init": "Store.lookup",
    "m2c_store_stats_init": "Store.stats",
    "m2c_store_create": "Store",
    "m2c_store_destroy": "Store.close",
    "m2c_store_insert": "Store.insert",
    "m2c_store_lookup": "Store.lookup",
    "m2c_store_restore": "Store.restore",
    "m2c_store_pin": "Store.pin",
    "m2c_store_unpin": "Store.unpin",
    "m2c_store_evict": "Store.evict",
    "m2c_store_get_stats": "Store.stats",
    "m2c_key_chain": "key_chain",
    "m2c_miss_str": "miss_str",
    "m2c_capture_begin": "Cache.capture_begin",
    "m2c_capture_end": "Cache.capture_end",
    "m2c_arenas": "Cache.arenas",
    "m2c_slot_regions": "Cache.slot_regions",
    "m2c_slot_digest": "Cache.slot_digest",
    "m2c_shard_init": "shard_config",
    "m2c_shard_config": "shard_config",
    "m2c_reshard_plan": "reshard_plan",
    "m2c_snapshot_reshard": "reshard_snapshots",
    "m2c_set_stream": "Cache.set_stream",
}


def header_functions():
    text = HEADER.read_text()
    return set(re.findall(r"^[a-z0-9_ ]*?\**\s*(m2c_[a-z0-9_]+)\(", text, re.M))


def test_every_header_function_is_wrapped():
    funcs = header_functions()
    assert len(funcs) >= 65
    assert sorted(funcs - WRAPPED.keys()) == [], "header functions with no Python wrapper"
    assert sorted(WRAPPED.keys() - funcs) == [], "wrappers of functions the header lacks"
    for name in set(WRAPPED.values()):
        obj = m2c
        for part in name.split("."):
            obj = getattr(obj, part)
        assert obj is not None
