//! The host side of the projection contract, generated: the current one
//! (`wit/projection.wit`, 0.2.0) and the one modules built before it still
//! use (`wit/legacy/projection-0.1.0.wit`). The only `bindgen!`s in the
//! host; nothing outside `runtime/` sees these types.
//!
//! Every read-model import is `trappable`: the guest handles the failures it
//! can act on through the WIT `result` of `put`; a failure of the host itself
//! (its database) becomes a trap, which faults the projection and rolls the
//! batch back (see docs/adr/0003-projection-contract.md).

wasmtime::component::bindgen!({
    path: "../wit/projection.wit",
    world: "projection",
    imports: { default: trappable },
});

/// The 0.1.0 contract: the same imports and exports, with a description that
/// has only type prefixes.
pub(super) mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/legacy/projection-0.1.0.wit",
        world: "projection",
        imports: { default: trappable },
    });
}
