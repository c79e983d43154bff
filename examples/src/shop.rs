//! A small shop, `acme.shop.v1.Shop`: the kind of service a new user
//! writes first. Its proto has a dotted package that imports another
//! package (`acme.common.v1.Money`), a well-known type
//! (`google.protobuf.Timestamp`), nested messages (`Order.Line`,
//! `Order.Receipt`) and an enum (`Item.Availability`); its handlers block
//! (on a lock, and on a simulated database round trip), as handlers of a
//! sync program do.
//!
//! ```no_run
//! use grpc_blocking::Server;
//! use grpc_blocking_examples::acme::shop::v1::{GetItemRequest, ShopClient, ShopServer};
//! use grpc_blocking_examples::shop::ShopService;
//!
//! let server = Server::builder()
//!     .add_service(ShopServer::new(ShopService::with_catalogue()))
//!     .bind("127.0.0.1:0")?
//!     .spawn()?;
//! let client = ShopClient::connect(server.local_addr())?;
//! let tea = client.get_item(GetItemRequest { id: "tea".into() })?;
//! println!("{} costs {:?}", tea.name, tea.price);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use grpc_blocking::prost_types::Timestamp;
use grpc_blocking::server::ServerContext;
use grpc_blocking::{Metadata, Status};

use crate::acme::common::v1::Money;
use crate::acme::shop::v1::item::Availability;
use crate::acme::shop::v1::{order, GetItemRequest, Item, Order, Shop};

/// Nanos in one unit of money.
const NANOS: i64 = 1_000_000_000;

/// The shop: a catalogue with stock, behind a lock.
#[derive(Debug)]
pub struct ShopService {
    items: Mutex<BTreeMap<String, Item>>,
    next_order: AtomicU64,
    /// How long each handler waits for its (simulated) database.
    database_latency: Duration,
}

impl ShopService {
    /// A shop selling tea (100 in stock) and cups (30 in stock), whose
    /// database answers in about a millisecond.
    pub fn with_catalogue() -> Self {
        let item = |id: &str, name: &str, cents: i64, stock: u32| Item {
            id: id.into(),
            name: name.into(),
            price: Some(money(cents * (NANOS / 100))),
            availability: Availability::InStock.into(),
            stock,
        };
        let items = [
            item("tea", "A box of tea", 450, 100),
            item("cup", "A cup", 1299, 30),
        ];
        ShopService {
            items: Mutex::new(items.into_iter().map(|i| (i.id.clone(), i)).collect()),
            next_order: AtomicU64::new(1),
            database_latency: Duration::from_millis(1),
        }
    }

    /// Waits as a database round trip would: the handler blocks.
    fn database_round_trip(&self) {
        std::thread::sleep(self.database_latency);
    }
}

/// `nanos` billionths of a euro as [`Money`].
fn money(nanos: i64) -> Money {
    Money {
        currency: "EUR".into(),
        units: nanos / NANOS,
        nanos: i32::try_from(nanos % NANOS).unwrap_or(0),
    }
}

/// A price in billionths of its unit.
fn nanos_of(money: &Money) -> i64 {
    money.units * NANOS + i64::from(money.nanos)
}

impl Shop for ShopService {
    fn get_item(&self, request: GetItemRequest, ctx: &ServerContext) -> Result<Item, Status> {
        // A caller whose deadline leaves no time for the database gets its
        // answer at once.
        if ctx
            .time_remaining()
            .is_some_and(|left| left < self.database_latency)
        {
            return Err(Status::deadline_exceeded(
                "no time left to look the item up",
            ));
        }
        self.database_round_trip();
        let items = self
            .items
            .lock()
            .map_err(|_| Status::internal("the catalogue is broken"))?;
        items
            .get(&request.id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no item {:?}", request.id)))
    }

    fn place_order(&self, order: Order, ctx: &ServerContext) -> Result<order::Receipt, Status> {
        if order.lines.is_empty() || order.lines.iter().any(|l| l.quantity == 0) {
            return Err(Status::invalid_argument(
                "an order needs at least one line, each of at least one item",
            ));
        }
        self.database_round_trip();
        let mut items = self
            .items
            .lock()
            .map_err(|_| Status::internal("the catalogue is broken"))?;
        // Check every line before reserving any: all or nothing.
        let mut total = 0;
        for line in &order.lines {
            let item = items
                .get(&line.item_id)
                .ok_or_else(|| Status::not_found(format!("no item {:?}", line.item_id)))?;
            if item.stock < line.quantity {
                return Err(Status::failed_precondition(format!(
                    "only {} of {:?} left, {} ordered",
                    item.stock, line.item_id, line.quantity
                )));
            }
            total += nanos_of(item.price.as_ref().unwrap_or(&money(0))) * i64::from(line.quantity);
        }
        for line in &order.lines {
            if let Some(item) = items.get_mut(&line.item_id) {
                item.stock -= line.quantity;
                if item.stock == 0 {
                    item.set_availability(Availability::SoldOut);
                }
            }
        }
        drop(items);
        // Orders are numbered per shop and named after the customer the
        // caller says it acts for.
        let customer = ctx.metadata().get("x-customer").unwrap_or("anonymous");
        let number = self.next_order.fetch_add(1, Ordering::Relaxed);
        let order_id = format!("{customer}-{number}");
        let mut trailers = Metadata::new();
        trailers.insert("x-order-id", &order_id)?;
        ctx.set_trailing_metadata(trailers);
        Ok(order::Receipt {
            order_id,
            total: Some(money(total)),
            placed_at: Some(Timestamp::from(SystemTime::now())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_splits_into_units_and_nanos() {
        let m = money(12 * NANOS + 990_000_000);
        assert_eq!((m.units, m.nanos), (12, 990_000_000));
        assert_eq!(nanos_of(&m), 12 * NANOS + 990_000_000);
    }
}
