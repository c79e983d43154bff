//! `shop`: serves the shop (`acme.shop.v1.Shop`) on a free port and has
//! eight client threads share one client: each looks up the cups and orders
//! one, five times. There are 30 cups, so 30 orders go through and 10 are
//! refused (FAILED_PRECONDITION); the program prints both counts and exits
//! non-zero on anything else. Sold out, the shop tells health checkers it
//! no longer serves, and prints what they see.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use grpc_blocking::health::HealthClient;
use grpc_blocking::{CallOptions, Code, Metadata, Server, Status};
use grpc_blocking_examples::acme::shop::v1::{
    order, GetItemRequest, Order, ShopClient, ShopServer,
};
use grpc_blocking_examples::shop::ShopService;

const THREADS: usize = 8;
const ORDERS_PER_THREAD: usize = 5;

/// One customer's turn: look up the cup, order one, read the receipt.
/// Returns whether the order went through (false: sold out).
fn buy_a_cup(client: &ShopClient, customer: &str) -> Result<bool, Status> {
    // Start the lookup without waiting for it, with a deadline...
    let lookup = client.get_item_start(
        GetItemRequest { id: "cup".into() },
        CallOptions::new().timeout(Duration::from_secs(5)),
    );
    // ...do other work meanwhile, then wait for the item.
    let cup = lookup.wait()?;

    let mut metadata = Metadata::new();
    metadata.insert("x-customer", customer)?;
    let order = Order {
        lines: vec![order::Line {
            item_id: cup.id,
            quantity: 1,
        }],
    };
    let options = CallOptions::new()
        .metadata(metadata)
        .timeout(Duration::from_secs(5));
    // The receipt, with the response's metadata: the order id comes back
    // in the trailers.
    match client.place_order_start(order, options).wait_response() {
        Ok(response) => {
            let id = response.trailers.get("x-order-id").unwrap_or("?");
            assert_eq!(id, response.message.order_id);
            Ok(true)
        }
        Err(status) if status.code() == Code::FailedPrecondition => Ok(false),
        Err(status) => Err(status),
    }
}

fn main() {
    let run = || -> Result<(), String> {
        let server = Server::builder()
            .add_service(ShopServer::new(ShopService::with_catalogue()))
            .bind("127.0.0.1:0")
            .map_err(|e| format!("cannot bind: {e}"))?
            .spawn()
            .map_err(|e| format!("cannot start the server: {e}"))?;
        println!("shop listening on {}", server.local_addr());
        // One client (one connection), shared by every thread.
        let client = ShopClient::connect(server.local_addr()).map_err(|e| e.to_string())?;
        let (placed, sold_out) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|scope| {
            let threads: Vec<_> = (0..THREADS)
                .map(|n| {
                    let (client, placed, sold_out) = (&client, &placed, &sold_out);
                    scope.spawn(move || -> Result<(), Status> {
                        let customer = format!("customer{n}");
                        for _ in 0..ORDERS_PER_THREAD {
                            let counter = if buy_a_cup(client, &customer)? {
                                placed
                            } else {
                                sold_out
                            };
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(())
                    })
                })
                .collect();
            threads.into_iter().try_for_each(|t| match t.join() {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err("a client thread panicked".to_owned()),
            })
        })?;
        let (placed, sold_out) = (placed.into_inner(), sold_out.into_inner());
        println!("orders placed: {placed}, refused as sold out: {sold_out}");

        // Sold out: health checkers (a load balancer, an orchestrator) are
        // told the shop no longer serves, and send customers elsewhere.
        let health = server.health().ok_or("health checking is on by default")?;
        health.set_not_serving(ShopClient::SERVICE_NAME);
        let checker = HealthClient::connect(server.target()).map_err(|e| e.to_string())?;
        let status = checker
            .status(ShopClient::SERVICE_NAME)
            .map_err(|e| e.to_string())?;
        println!("shop health once sold out: {}", status.as_str_name());
        server.shutdown().map_err(|e| e.to_string())?;
        if (placed, sold_out) != (30, 10) {
            return Err("expected 30 orders placed and 10 refused".to_owned());
        }
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("shop: {e}");
        std::process::exit(1);
    }
}
