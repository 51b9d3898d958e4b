//! `CONNECT host:port`: a byte tunnel, passed through untouched (unless the host is listed for
//! termination, see `mitm`). The target is dialled before answering, so an unreachable target
//! gets 502 instead of a dead tunnel.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::{empty, error_response, ProxyBody, ProxyState};

pub(crate) async fn connect(
    state: &Arc<ProxyState>,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let Some(authority) = request
        .uri()
        .authority()
        .map(|authority| authority.to_string())
    else {
        return error_response(StatusCode::BAD_REQUEST, "proxy", "CONNECT needs host:port");
    };
    if let Some(mitm) = state.config.mitm.clone() {
        let host = request
            .uri()
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_string();
        if mitm.matches(&host) {
            let state = state.clone();
            let tracker = state.tracker.clone();
            tracker.spawn(async move {
                match hyper::upgrade::on(request).await {
                    Ok(upgraded) => {
                        if let Err(err) = super::mitm::serve(state, &mitm, upgraded, authority.clone()).await {
                            tracing::debug!(%authority, error = %err, "terminated tunnel ended with an error");
                        }
                    }
                    Err(err) => tracing::debug!(%authority, error = %err, "connect upgrade failed"),
                }
            });
            return Response::new(empty());
        }
    }
    let mut upstream = match tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(&authority),
    )
    .await
    {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(err)) => {
            return error_response(
                StatusCode::BAD_GATEWAY,
                "proxy",
                &format!("connect to {authority}: {err}"),
            )
        }
        Err(_) => {
            return error_response(
                StatusCode::GATEWAY_TIMEOUT,
                "proxy",
                &format!("connect to {authority} timed out"),
            )
        }
    };
    let cancel = state.cancel.clone();
    state.tracker.spawn(async move {
        let upgraded = match hyper::upgrade::on(request).await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(%authority, error = %err, "connect upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(upgraded);
        tokio::select! {
            _ = cancel.cancelled() => {}
            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(err) = copied {
                    tracing::debug!(%authority, error = %err, "connect tunnel ended with an error");
                }
            }
        }
    });
    Response::new(empty())
}
