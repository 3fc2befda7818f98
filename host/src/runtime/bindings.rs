//! The host side of `wit/projection.wit`, generated. The only `bindgen!` in
//! the host; nothing outside `runtime/` sees these types.
//!
//! Every read-model import is `trappable`: the guest handles the failures it
//! can act on through the WIT `result` of `put`; a failure of the host itself
//! (its database) becomes a trap, which faults the projection and rolls the
//! batch back (see docs/adr/0003-projection-contract.md).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "projection",
    imports: {
        "projector:projection/read-model": trappable,
        default: trappable,
    },
});
