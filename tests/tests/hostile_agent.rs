//! A broken or hostile agent cannot hurt the control plane.
//!
//! A hand-written protocol client (a real mTLS certificate, but none of the
//! SDK's manners) against the real control plane:
//! - a batch whose documents are not JSON objects: those documents are
//!   counted as rejected (with the reason on the job), the others indexed,
//!   the job completes;
//! - noise (a second Hello, an empty message, a batch for a job it does not
//!   hold): ignored;
//! - a message over the size limit: the session ends, the control plane
//!   keeps serving (the admin API answers, a well-behaved agent connects).

use std::time::Duration;

use anyhow::{bail, ensure, Context};
use ferry_sdk::proto::{self, agent_message::Message as Out, control_message::Message as In};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use ferry_tests::process::json_i64;
use ferry_tests::scenario::{metadata_u64, Admin, World, CONNECTORS};

const CONNECTOR: &str = "evil";

async fn next(inbound: &mut tonic::Streaming<proto::ControlMessage>) -> anyhow::Result<In> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(60), inbound.message())
            .await
            .context("no message from the control plane within 60 s")??
            .context("the control plane closed the session")?;
        if let Some(m) = msg.message {
            return Ok(m);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_messages_do_not_hurt_the_control_plane() {
    let world = World::start().expect("PostgreSQL, osmem, PKI");
    let mut cp = world.start_control_plane().expect("control plane");
    let admin = Admin::new(&world.grpc, cp.admin_addr());
    let result = async {
        admin.put_connector(CONNECTOR, CONNECTOR).await?;
        let tls = world.agent_tls("agent-evil")?;
        let cfg = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(&tls.ca)?))
            .identity(Identity::from_pem(std::fs::read(&tls.cert)?, std::fs::read(&tls.key)?));
        let channel = Endpoint::from_shared(cp.agents_url())?.tls_config(cfg)?.connect().await?;
        let mut client = proto::agent_service_client::AgentServiceClient::new(channel)
            .max_encoding_message_size(256 * 1024 * 1024);
        let (tx, rx) = mpsc::channel::<proto::AgentMessage>(16);
        let send = |m: Out| {
            let tx = tx.clone();
            async move { tx.send(proto::AgentMessage { message: Some(m) }).await.context("session gone") }
        };
        let field = proto::ConfigField {
            label: "Anything".into(),
            r#type: "str".into(),
            display: "text".into(),
            ..Default::default()
        };
        let hello = proto::Hello {
            protocol_version: 1,
            agent_version: "evil".into(),
            hostname: "evil".into(),
            connectors: vec![proto::ServedConnector {
                connector_id: CONNECTOR.into(),
                service_type: "postgresql".into(),
                configuration_schema: [("anything".to_string(), field)].into(),
                capabilities: None,
            }],
            max_concurrent_jobs: 1,
        };
        send(Out::Hello(hello.clone())).await?;
        let mut inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
        ensure!(matches!(next(&mut inbound).await?, In::Welcome(_)), "no Welcome");

        // Noise first.
        send(Out::Hello(hello)).await?;
        tx.send(proto::AgentMessage { message: None }).await?;
        send(Out::Batch(proto::DocumentBatch {
            job_id: "not-mine".into(),
            lease_id: "nope".into(),
            sequence: 1,
            documents: vec![proto::Document {
                id: "x".into(),
                source: b"{}".to_vec().into(),
                ..Default::default()
            }],
            checkpoint: vec![],
        }))
        .await?;

        // Configure, answer the check, get a job.
        admin
            .call(
                &format!("{CONNECTORS}/UpdateConfiguration"),
                json!({"connector_id": CONNECTOR, "values": {"anything": "x"}}),
            )
            .await?;
        let assign = loop {
            match next(&mut inbound).await? {
                In::ValidateConfiguration(v) => {
                    send(Out::ValidationResult(proto::ValidationResult {
                        connector_id: v.connector_id,
                        revision: v.revision,
                        ok: true,
                        error: String::new(),
                    }))
                    .await?;
                    // Once connected, ask for a job (retry until the check landed).
                    let mut created = None;
                    for _ in 0..50 {
                        if let Ok(id) = admin.create_job(CONNECTOR).await {
                            created = Some(id);
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    created.context("could not create a job")?;
                }
                In::AssignJob(a) => break a,
                _ => {}
            }
        };

        // 20 good documents and 2 that are not JSON objects.
        let mut documents: Vec<proto::Document> = (0..20)
            .map(|i| proto::Document {
                id: format!("doc-{i}"),
                source: format!("{{\"n\":{i}}}").into_bytes().into(),
                ..Default::default()
            })
            .collect();
        documents.push(proto::Document {
            id: "bad-1".into(),
            source: b"not json at all".to_vec().into(),
            ..Default::default()
        });
        documents.push(proto::Document {
            id: "bad-2".into(),
            source: b"[1,2,3]".to_vec().into(),
            ..Default::default()
        });
        send(Out::Batch(proto::DocumentBatch {
            job_id: assign.job_id.clone(),
            lease_id: assign.lease_id.clone(),
            sequence: 1,
            documents,
            checkpoint: b"cp".to_vec(),
        }))
        .await?;
        let ack = loop {
            if let In::BatchAck(a) = next(&mut inbound).await? {
                break a;
            }
        };
        ensure!(ack.indexed == 20 && ack.failed == 2, "{ack:?}");
        send(Out::JobFinished(proto::JobFinished {
            job_id: assign.job_id.clone(),
            lease_id: assign.lease_id.clone(),
            last_sequence: 1,
            outcome: Some(proto::job_finished::Outcome::Completed(proto::JobCompleted {})),
            metadata: None,
        }))
        .await?;
        let job = admin.wait_completed(&assign.job_id, Duration::from_secs(60)).await?;
        ensure!(json_i64(&job["indexedDocumentCount"]) == 20, "{job}");
        ensure!(metadata_u64(&job, "rejected_document_count") == Some(2), "{job}");
        let reasons = job["metadata"]["rejections"].to_string();
        ensure!(reasons.contains("bad-1") && reasons.contains("invalid_source"), "{job}");
        ensure!(world.es.count(CONNECTOR).await? == 20, "_count");

        // Over the size limit (64 MiB): the session ends, nothing else.
        let huge = vec![b'a'; 65 * 1024 * 1024];
        let _ = send(Out::Batch(proto::DocumentBatch {
            job_id: "x".into(),
            lease_id: "x".into(),
            sequence: 1,
            documents: vec![proto::Document { id: "huge".into(), source: huge.into(), ..Default::default() }],
            checkpoint: vec![],
        }))
        .await;
        let ended = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match inbound.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return "closed".to_string(),
                    Err(s) => return format!("{:?}: {}", s.code(), s.message()),
                }
            }
        })
        .await
        .context("the session survived an oversized message")?;
        eprintln!("oversized message ended the session: {ended}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        if !cp.service.is_running() {
            bail!("the control plane died");
        }
        admin.connector(CONNECTOR).await.context("the admin API no longer answers")?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = result {
        panic!("{e:?}");
    }
}
