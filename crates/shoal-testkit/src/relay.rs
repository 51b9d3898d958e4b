//! A TCP relay that slows the bytes flowing from its upstream to clients: fault injection for
//! "this transfer is still in flight", which a real registry on loopback cannot give.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Bytes written per tick; the tick length sets the rate.
const CHUNK: usize = 64 * 1024;

/// A running relay; dropping it stops accepting and closes every relayed connection.
#[derive(Debug)]
pub struct ThrottledRelay {
    addr: SocketAddr,
    cancel: CancellationToken,
}

impl ThrottledRelay {
    /// Relays `listen` (port 0 allowed) to `upstream`, sending at most `bytes_per_second` to each
    /// client connection; the client → upstream direction is not slowed.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        bytes_per_second: u64,
    ) -> anyhow::Result<ThrottledRelay> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let tick = Duration::from_secs_f64(CHUNK as f64 / bytes_per_second.max(1) as f64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { continue };
                let token = token.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = relay(client, upstream, tick) => {}
                    }
                });
            }
        });
        Ok(ThrottledRelay { addr, cancel })
    }

    /// The relay's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ThrottledRelay {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, tick: Duration) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upward = async {
        tokio::io::copy(&mut client_read, &mut server_write).await?;
        server_write.shutdown().await
    };
    let downward = async {
        let mut buffer = vec![0u8; CHUNK];
        let mut ticker = tokio::time::interval(tick);
        loop {
            ticker.tick().await;
            let read = server_read.read(&mut buffer).await?;
            if read == 0 {
                return client_write.shutdown().await;
            }
            client_write.write_all(&buffer[..read]).await?;
        }
    };
    tokio::try_join!(upward, downward)?;
    Ok(())
}
