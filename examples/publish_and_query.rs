//! A producer and a caller in one program: publishes a goods receipt and a till sale for one
//! store and SKU into JetStream, the way any producer does, then asks a running retailflow
//! what the store now has.
//!
//! Start nats-server with JetStream and `retailflow run` first, then:
//!
//! ```sh
//! cargo run --example publish_and_query
//! ```
//!
//! `NATS_URL` (default `127.0.0.1:4222`) and `RETAILFLOW_API` (default
//! `http://127.0.0.1:8080`) say where they are.

use anyhow::{Context, Result};
use retailflow::domain::codec::{self, CONTENT_TYPE, MSGPACK};
use retailflow::domain::{
    BusinessDay, Currency, Envelope, Event, ItemLine, QtyLine, Receipt, Sale, TaxLine, Tender,
    subject,
};
use std::time::{SystemTime, UNIX_EPOCH};

const STORE: &str = "S0042";
const SKU: &str = "MUG-01";

#[tokio::main]
async fn main() -> Result<()> {
    let nats_url = std::env::var("NATS_URL").unwrap_or_else(|_| "127.0.0.1:4222".into());
    let api = std::env::var("RETAILFLOW_API").unwrap_or_else(|_| "http://127.0.0.1:8080".into());

    // Every event names its producer (`source`) and carries that producer's next sequence
    // number; its `id` is unique per source. A real till keeps its counter across restarts.
    // This example is a new till (and goods-in desk) on every run, so every run counts; sending
    // an event again under the same id would be dropped as a duplicate.
    let now_ms = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    let run = now_ms / 1000;
    let envelope = |source: String, event: Event| Envelope::new(&source, 1, now_ms, event);

    // 40 mugs arrive at the store...
    let receipt = envelope(
        format!("wms/{STORE}/ex{run}"),
        Event::Receipt(Receipt {
            location: STORE.into(),
            lines: vec![QtyLine {
                sku: SKU.into(),
                qty: 40,
            }],
            reference: Some("PO-7781".into()),
        }),
    );
    // ...and a till sells two: 2 x 12.00 plus 20% VAT, paid 28.80 by card. Amounts are minor
    // units, and the tenders must add up to the lines' net plus tax.
    let sale = envelope(
        format!("pos/{STORE}/ex{run}"),
        Event::Sale(Sale {
            location: STORE.into(),
            business_day: BusinessDay::from_days(i32::try_from(now_ms / 86_400_000)?),
            currency: Currency::parse("EUR").map_err(anyhow::Error::msg)?,
            lines: vec![ItemLine {
                sku: SKU.into(),
                qty: 2,
                unit_price: 1200,
                discount: 0,
                tax_code: "VAT20".into(),
                taxes: vec![TaxLine {
                    code: "VAT20".into(),
                    amount: 480,
                }],
                restock: None,
            }],
            tenders: vec![Tender {
                kind: "card".into(),
                amount: 2880,
            }],
        }),
    );

    let client = async_nats::connect(retailflow::bus::servers(&nats_url))
        .await
        .with_context(|| format!("connecting to NATS at {nats_url}"))?;
    let jetstream = async_nats::jetstream::new(client);
    let mut last = 0;
    for event in [&receipt, &sale] {
        // The checks retailflow makes on arrival; an event failing them would be dead-lettered.
        event.validate()?;
        // `retail.v1.<system>.<location>.<kind>`, the system being the source's first segment.
        let subject = subject::event(
            event.system(),
            event.event.location_token(),
            event.event.kind(),
        );
        let mut headers = async_nats::HeaderMap::new();
        // The event id as `Nats-Msg-Id`: JetStream drops a re-send within its duplicate window.
        headers.insert("Nats-Msg-Id", event.id.as_str());
        headers.insert(CONTENT_TYPE, MSGPACK);
        let ack = jetstream
            .publish_with_headers(
                subject.clone(),
                headers,
                codec::encode_msgpack(event)?.into(),
            )
            .await?
            // The second await is JetStream's acknowledgement that the stream stored it.
            .await
            .with_context(|| format!("no stream took {subject}; is retailflow running?"))?;
        println!(
            "published {} on {subject}: stream sequence {}",
            event.id, ack.sequence
        );
        last = ack.sequence;
    }

    // `min_as_of`: answer once the view reflects the sale's sequence (read-your-writes).
    let url = format!("{api}/v1/availability/{SKU}?location={STORE}&min_as_of={last}");
    let answer: serde_json::Value = reqwest::get(&url)
        .await
        .with_context(|| format!("asking {url}"))?
        .error_for_status()?
        .json()
        .await?;
    println!("GET {url}\n{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}
