//! Reader-only throughput: the PostgreSQL source into a sink that drops
//! documents. `cargo run --release -p ferry-agent --example read_speed -- ROWS`
use std::time::Instant;

use async_trait::async_trait;
use ferry_agent::postgres::{full_sync, DocumentSink, PostgresConfig};
use ferry_sdk::SyncStopped;
use ferry_tests::postgres::PgCluster;

struct Null(u64, u64);
#[async_trait]
impl DocumentSink for Null {
    async fn send(&mut self, id: String, source: Vec<u8>) -> Result<(), SyncStopped> {
        self.0 += 1;
        self.1 += (id.len() + source.len()) as u64;
        Ok(())
    }
    fn checkpoint(&mut self, _: Vec<u8>) {}
    fn set_metadata(&mut self, _: &str, _: serde_json::Value) {}
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let pg = PgCluster::start()?;
    pg.create_database("bench").await?;
    pg.execute("bench", &format!("CREATE TABLE items (id bigint PRIMARY KEY, sku text, title text, description text, category text, price numeric(12,2), quantity int, created_at timestamptz, active boolean, attrs jsonb);
INSERT INTO items SELECT g, 'SKU-' || lpad(g::text, 10, '0'), 'Product ' || g || ' ' || md5(g::text), left(repeat(md5(g::text || 'a') || ' ' || md5(g::text || 'b') || ' ', 5), 300), 'books', 9.99, 3, now(), true, jsonb_build_object('color','c','size',g % 5) FROM generate_series(1::bigint, {rows}::bigint) g;")).await?;
    pg.execute("bench", "VACUUM ANALYZE items").await?;
    let values: ferry_sdk::ConfigValues = serde_json::from_value(serde_json::json!({
        "host": pg.host(), "port": pg.port(), "username": pg.superuser(), "password": pg.password(),
        "database": "bench", "schema": "public", "tables": "items"}))?;
    let cfg = PostgresConfig::from_values(&values).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut sink = Null(0, 0);
    let t = Instant::now();
    full_sync(&cfg, None, &Default::default(), &mut sink).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let s = t.elapsed().as_secs_f64();
    println!("{} docs, {} MB in {:.2}s = {:.0} docs/s", sink.0, sink.1 / 1_000_000, s, sink.0 as f64 / s);
    Ok(())
}
