//! What a call that failed in transport promises: whether its request certainly never left
//! this process (then nothing was done, and it may go elsewhere), or may have reached the
//! server and taken effect. The broker's forwards and the jepsen checker's outcomes read it
//! here.

/// Whether a call that failed with `e` certainly never reached the server: the
/// connection for it could not be made (refused, unreachable, timed out while connecting), or
/// the connection closed while the request still waited in its queue. Any other failure may
/// have come after the request was sent.
pub fn never_sent(e: &tonic::Status) -> bool {
    match e.code() {
        // tonic reports a failed connect as UNAVAILABLE whose cause (message, or an error in the
        // source chain) is hyper's "tcp connect error"; a request is only written to a
        // connection that was made.
        tonic::Code::Unavailable => {
            const CONNECT_ERROR: &str = "tcp connect error";
            e.message().starts_with(CONNECT_ERROR) || causes(e).any(|c| c.to_string().starts_with(CONNECT_ERROR))
        }
        // hyper's "canceled" is a request dropped from the connection's queue before it was
        // handed to HTTP/2 (the connection closed, or was not ready): never written. tonic
        // maps it to CANCELLED and keeps the hyper error as the source; its own CANCELLED (a
        // deadline that expired) carries none, and may come after the request went out.
        tonic::Code::Cancelled => causes(e).any(|c| c.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_canceled)),
        _ => false,
    }
}

/// The source chain of `e`, outermost first.
fn causes(e: &tonic::Status) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(e), |c| c.source())
}

#[cfg(test)]
mod tests {
    use proto::raftmq::v1::FetchRequest;
    use proto::raftmq::v1::queue_service_client::QueueServiceClient;
    use tonic::transport::Endpoint;

    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_never_sent_and_a_dropped_one_may_have_been() {
        // A port with nothing listening: the connection is refused.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let channel = Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
        let e = QueueServiceClient::new(channel).fetch(FetchRequest::default()).await.expect_err("nothing listens");
        assert!(never_sent(&e), "{e:?}");

        // A server that reads the request's HEADERS frame and then closes: the request was
        // written, and a failure after that may have come after it took effect. (A server
        // that closes before the request leaves the queue cancels it unsent: the test below.)
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(close_after_the_first_headers_frame(socket));
            }
        });
        let channel = Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
        let e = QueueServiceClient::new(channel).fetch(FetchRequest::default()).await.expect_err("closed after reading");
        assert!(!never_sent(&e), "{e:?}");
        assert!(!never_sent(&tonic::Status::deadline_exceeded("slow")));
        assert!(!never_sent(&tonic::Status::unavailable("closed")));
        assert!(!never_sent(&tonic::Status::cancelled("Timeout expired")));
    }

    /// Reads HTTP/2 from `socket` (the client preface, then frames: a 9-byte header whose
    /// first 3 bytes are the payload length and 4th the type) until a HEADERS frame (type 1)
    /// has arrived whole, then closes the connection without answering.
    async fn close_after_the_first_headers_frame(mut socket: tokio::net::TcpStream) {
        use tokio::io::AsyncReadExt;
        const PREFACE: usize = 24;
        const HEADERS: u8 = 1;
        let mut preface = [0u8; PREFACE];
        if socket.read_exact(&mut preface).await.is_err() {
            return;
        }
        loop {
            let mut header = [0u8; 9];
            if socket.read_exact(&mut header).await.is_err() {
                return;
            }
            let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let mut payload = vec![0u8; length];
            if socket.read_exact(&mut payload).await.is_err() || header[3] == HEADERS {
                return;
            }
        }
    }

    /// The failure a forward meets when the leader's connection closes while the request still
    /// waits in the connection's queue (the leader was killed a moment before): hyper cancels
    /// it unsent, and the forward may go to the new leader.
    #[tokio::test]
    async fn a_request_dropped_from_a_closed_connections_queue_was_never_sent() {
        // Connects through the listen backlog; nothing is ever read from it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http2::handshake::<_, _, String>(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .expect("handshake");
        // Queued: the connection task that would hand it to HTTP/2 has not run.
        let queued = sender.send_request(hyper::Request::new(String::new()));
        drop(connection);
        let e = queued.await.expect_err("its connection is gone");
        assert!(e.is_canceled(), "{e:?}");
        let status = tonic::Status::from_error(Box::new(e));
        assert_eq!(status.code(), tonic::Code::Cancelled, "{status:?}");
        assert!(never_sent(&status), "{status:?}");
    }
}
