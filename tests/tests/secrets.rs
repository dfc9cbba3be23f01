//! A connector's password given as a reference only the agent resolves
//! (`env:PG_PASSWORD`): the real binaries sync with it, and the password
//! itself is in no Elasticsearch document — every index, hidden and system
//! ones included, is read whole (`match_all`) and searched for it, while the
//! reference is found in `.elastic-connectors` (so the scan reads the
//! documents that would hold it).

use serde_json::{json, Value};

use ferry_tests::process::Agent;
use ferry_tests::scenario::{Admin, World, STEP};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_given_as_an_env_reference_syncs_and_never_reaches_elasticsearch() {
    let w = World::start().expect("world");
    w.load_items("vault", 30).await.unwrap();
    let cp = w.start_control_plane().expect("control plane");
    let mut config = w.agent_config(&cp.agents_url(), "agent-vault", "vault").unwrap();
    config.env.push(("PG_PASSWORD".into(), w.pg.password().into()));
    let agent = Agent::start(config).expect("agent");
    let admin = Admin::new(&w.grpc, cp.admin_addr());
    let result = async {
        admin.put_connector("vault", "vault").await?;
        let mut values = w.pg_values("vault");
        values["password"] = json!("env:PG_PASSWORD");
        admin.configure("vault", values).await?;
        let job = admin.create_job("vault").await?;
        let done = admin.wait_completed(&job, STEP).await?;
        anyhow::ensure!(w.es.count("vault").await? == 30, "{done}");

        let password = w.pg.password();
        let indices =
            w.es.request(reqwest::Method::GET, "_cat/indices?format=json&expand_wildcards=all", None).await?;
        let names: Vec<String> = indices
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["index"].as_str().map(str::to_owned))
            .collect();
        anyhow::ensure!(names.iter().any(|n| n == ".elastic-connectors-sync-jobs"), "indices: {names:?}");
        let mut saw_reference = false;
        let mut documents = 0;
        for index in &names {
            w.es.refresh(index).await?;
            let hits = w.es.search(index, &json!({"size": 10000, "query": {"match_all": {}}})).await?;
            let hits: &Value = &hits["hits"]["hits"];
            documents += hits.as_array().map_or(0, |h| h.len());
            let text = hits.to_string();
            anyhow::ensure!(!text.contains(password), "the password is in index {index}: {text}");
            saw_reference |= text.contains("env:PG_PASSWORD");
        }
        println!("scanned {} indices, {documents} documents: no password", names.len());
        anyhow::ensure!(
            saw_reference,
            "the reference was found in no index: the scan missed the connector documents"
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = result {
        panic!("{e:#}\n{}\n{}", cp.logs(), agent.logs());
    }
}
