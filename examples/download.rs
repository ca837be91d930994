//! A download that survives a cut: an embedded server on loopback cuts the
//! body at 40% once; the download resumes it with a range request (under
//! the retry policy's `resume_bodies`: the resume is one more attempt of
//! the request, in its report), checks the SHA-256, and renames the
//! finished file into place. A progress bar shows it (`indicatif`, used by
//! this example only).
//!
//! ```text
//! cargo run --example download --features download
//! ```

#[path = "../tests/support/ranges.rs"]
mod ranges;

use std::error::Error;

use http_resilience::download::Download;
use http_resilience::{RetryMiddleware, RetryPolicy};
use indicatif::{ProgressBar, ProgressStyle};
use ranges::{Fault, RangeServer};
use sha2::{Digest, Sha256};

const LEN: usize = 4 * 1024 * 1024;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // The server: 4 MiB with a strong ETag; the first response is cut after
    // 40% of the body, the next ones are served right.
    let content = ranges::content(LEN, 2024);
    let digest: [u8; 32] = Sha256::digest(&content).into();
    let cut = LEN * 4 / 10;
    let server = RangeServer::start(content, vec![Fault::CutAfter(cut), Fault::Honest]).await;

    // Resumes go by the policy: at most 3, after its backoff, paid from the
    // retry budget like a retry.
    let policy = RetryPolicy::builder()
        .resume_bodies(true)
        .max_resumes(3)
        .build()?;
    let client =
        reqwest_middleware::ClientBuilder::new(reqwest::Client::builder().no_proxy().build()?)
            .with(RetryMiddleware::new(policy))
            .build();
    let dir = std::env::temp_dir().join(format!("http-resilience-download-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let target = dir.join("payload.bin");

    let bar = ProgressBar::new(LEN as u64);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec}",
    )?);
    let shown = bar.clone();
    let done = Download::new(client.get(server.url("/payload.bin")).build()?)
        .sha256(digest)
        .on_progress(move |p| {
            if let Some(total) = p.total {
                shown.set_length(total);
            }
            shown.set_position(p.done);
        })
        .to(&client, &target)
        .await?;
    bar.finish();

    println!("saved {} bytes to {}", done.len(), done.path().display());
    println!("sha256 {} (verified)", done.sha256().unwrap_or_default());
    for resume in done.resumes() {
        println!(
            "resumed at byte {} after a cut: {} with {} bytes",
            resume.offset(),
            resume.status().map_or(0, |s| s.as_u16()),
            resume.fetched()
        );
    }
    if let Some(report) = done.report() {
        println!("report: {report}");
    }
    for (i, request) in server.seen().iter().enumerate() {
        println!(
            "request {}: Range {}, If-Range {} -> {} ({} bytes)",
            i + 1,
            request.range.as_deref().unwrap_or("-"),
            request.if_range.as_deref().unwrap_or("-"),
            request.status,
            request.written
        );
    }
    std::fs::remove_dir_all(&dir)?;
    // (`.ci/run` runs this example: it fails unless the cut was resumed.)
    if done.resumes().len() != 1 {
        return Err(format!("expected one resume, saw {}", done.resumes().len()).into());
    }
    Ok(())
}
