//! Requests that do not go P2P: forwarded to the upstream as they are, streamed both ways, with
//! status and headers intact (hop-by-hop and `X-Dragonfly-*` headers removed).

use std::sync::Arc;

use futures::TryStreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::{Frame, Incoming};

use super::{error_response, headers, ProxyBody, ProxyState};

pub(crate) async fn forward(
    state: &Arc<ProxyState>,
    request: Request<Incoming>,
    url: url::Url,
) -> Response<ProxyBody> {
    let (parts, body) = request.into_parts();
    let mut request_headers = parts.headers;
    headers::strip_hop_by_hop(&mut request_headers);
    headers::strip_dragonfly(&mut request_headers);
    request_headers.remove(http::header::HOST);
    let body_stream =
        BodyStream::new(body).try_filter_map(|frame| async move { Ok(frame.into_data().ok()) });
    let upstream = state
        .passthrough
        .request(parts.method.clone(), url.clone())
        .headers(request_headers)
        .body(reqwest::Body::wrap_stream(body_stream))
        .send()
        .await;
    let upstream = match upstream {
        Ok(upstream) => upstream,
        Err(err) => {
            let message = format!("forward {} {url}: {err}", parts.method);
            return error_response(StatusCode::BAD_GATEWAY, "proxy", &message);
        }
    };
    let status = upstream.status();
    let mut response_headers = upstream.headers().clone();
    headers::strip_hop_by_hop(&mut response_headers);
    let stream = upstream
        .bytes_stream()
        .map_ok(Frame::data)
        .map_err(std::io::Error::other);
    let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
    *response.status_mut() = status;
    *response.headers_mut() = response_headers;
    response
}
