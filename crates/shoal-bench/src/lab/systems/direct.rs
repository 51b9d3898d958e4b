//! The baseline: every node fetches the file from the origin with `curl`.

use super::{run_nodes, run_to_end, Ctx, Measured};

pub(crate) async fn run(ctx: &Ctx<'_>) -> anyhow::Result<Measured> {
    let (mut measured, _) = run_nodes(ctx, |_, host, output| async move {
        let mut command = host.command("curl");
        command
            .args(["-sS", "--fail", "-o"])
            .arg(&output)
            .arg(&ctx.origin.url);
        if ctx.loopback() {
            command
                .arg("--limit-rate")
                .arg(ctx.node_bw.bytes_per_second().to_string());
        }
        run_to_end(command, &format!("curl on {}", host.name)).await
    })
    .await?;
    for node in &mut measured.per_node {
        node.bytes_from_origin = Some(ctx.origin.size);
        node.bytes_from_parents = Some(0);
    }
    Ok(measured)
}
