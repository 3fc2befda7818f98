//! `inventory`: stock levels per (sku, warehouse) and per sku across
//! warehouses, from `StockReceived`, `StockShipped` and `StockAdjusted` in
//! streams `stock-{sku}`.
//!
//! Collections:
//! - `stock`, keyed `{sku}@{warehouse}`: `{ sku, warehouse, quantity }`.
//! - `skus`, keyed by sku: `{ sku, quantity, warehouses }` where `warehouses`
//!   maps each warehouse to its quantity.
//!
//! Quantities record what happened: shipping more than is in stock makes the
//! level negative rather than being refused (the projection reports facts;
//! refusing is the command side's job).
#![deny(missing_docs)]

use std::collections::BTreeMap;

use projector_events::{StockAdjusted, StockLine, StockReceived, StockShipped};
use projector_guest_sdk::{Description, Error, Event, EventSchema, Projection, ReadModel, Result};
use serde::{Deserialize, Serialize};

/// The projection.
#[derive(Debug)]
pub struct Inventory;

/// Stock of one sku in one warehouse.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarehouseStock {
    /// The sku.
    pub sku: String,
    /// The warehouse.
    pub warehouse: String,
    /// Units in stock.
    pub quantity: i64,
}

/// Stock of one sku across warehouses.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuStock {
    /// The sku.
    pub sku: String,
    /// Units across all warehouses.
    pub quantity: i64,
    /// Units per warehouse.
    pub warehouses: BTreeMap<String, i64>,
}

impl Projection for Inventory {
    fn description() -> Description {
        Description::new("inventory", "1.0.0")
            .event_types([StockReceived::TYPE, StockShipped::TYPE, StockAdjusted::TYPE])
            .streams(["stock-"])
            .index("stock", "sku")
            .index("stock", "warehouse")
    }

    fn apply(event: &Event, model: &mut ReadModel<'_>) -> Result<()> {
        let (line, delta) = if let Some(StockReceived(line)) = event.decode()? {
            let quantity = line.quantity;
            (line, quantity)
        } else if let Some(StockShipped(line)) = event.decode()? {
            let quantity = line.quantity.checked_neg().ok_or_else(|| Error::invalid_event("quantity out of range"))?;
            (line, quantity)
        } else if let Some(StockAdjusted(line)) = event.decode()? {
            let quantity = line.quantity;
            (line, quantity)
        } else {
            return Ok(());
        };
        apply_delta(model, line, delta)
    }
}

fn apply_delta(model: &mut ReadModel<'_>, line: StockLine, delta: i64) -> Result<()> {
    if line.sku.is_empty() || line.warehouse.is_empty() {
        return Err(Error::invalid_event("sku and warehouse must not be empty"));
    }
    let overflow = || Error::invalid_event(format!("stock of {} overflows", line.sku));
    let key = format!("{}@{}", line.sku, line.warehouse);
    let mut stock = model.get::<WarehouseStock>("stock", &key)?.unwrap_or_default();
    stock.quantity = stock.quantity.checked_add(delta).ok_or_else(overflow)?;
    stock.sku.clone_from(&line.sku);
    stock.warehouse.clone_from(&line.warehouse);
    model.put("stock", &key, &stock)?;

    let mut total = model.get::<SkuStock>("skus", &line.sku)?.unwrap_or_default();
    total.sku.clone_from(&line.sku);
    total.quantity = total.quantity.checked_add(delta).ok_or_else(overflow)?;
    total.warehouses.insert(line.warehouse.clone(), stock.quantity);
    model.put("skus", &line.sku, &total)
}

projector_guest_sdk::export_projection!(Inventory);

#[cfg(test)]
mod tests {
    use super::*;
    use projector_guest_sdk::testing::{Harness, TestEvent};
    use serde_json::json;

    fn movement(kind: &str, sku: &str, warehouse: &str, quantity: i64) -> TestEvent {
        TestEvent::json(kind, &json!({"sku": sku, "warehouse": warehouse, "quantity": quantity}))
            .stream(&format!("stock-{sku}"))
    }

    #[test]
    fn tracks_stock_per_warehouse_and_per_sku() {
        let mut harness = Harness::<Inventory>::new();
        harness
            .given([
                movement("StockReceived", "apple", "north", 100),
                movement("StockReceived", "apple", "south", 40),
                movement("StockShipped", "apple", "north", 30),
                movement("StockAdjusted", "apple", "south", -5),
                movement("StockReceived", "pear", "north", 7),
            ])
            .expect("applies");
        assert_eq!(
            harness.document("stock", "apple@north"),
            Some(&json!({"sku": "apple", "warehouse": "north", "quantity": 70}))
        );
        assert_eq!(
            harness.document("stock", "apple@south"),
            Some(&json!({"sku": "apple", "warehouse": "south", "quantity": 35}))
        );
        assert_eq!(
            harness.document("skus", "apple"),
            Some(&json!({"sku": "apple", "quantity": 105, "warehouses": {"north": 70, "south": 35}}))
        );
        assert_eq!(harness.document("skus", "pear").and_then(|d| d.get("quantity")), Some(&json!(7)));
    }

    #[test]
    fn overselling_goes_negative_and_other_streams_are_ignored() {
        let mut harness = Harness::<Inventory>::new();
        harness
            .given([
                movement("StockReceived", "fig", "east", 2),
                movement("StockShipped", "fig", "east", 5),
                movement("StockReceived", "fig", "east", 1000).stream("audit-fig").expect_ignored(),
            ])
            .expect("applies");
        assert_eq!(harness.document("stock", "fig@east").and_then(|d| d.get("quantity")), Some(&json!(-3)));
    }

    #[test]
    fn a_movement_with_a_missing_field_fails_the_batch() {
        let mut harness = Harness::<Inventory>::new();
        let broken = TestEvent::json("StockShipped", &json!({"sku": "kiwi", "quantity": 1})).stream("stock-kiwi");
        let err = harness.given([movement("StockReceived", "kiwi", "west", 1), broken]).expect_err("fails");
        assert_eq!(err.event_index, 1);
        assert!(harness.document("stock", "kiwi@west").is_none());
    }
}
