//! How the generated gRPC glue turns bytes into requests: a lenient decode
//! (a request that does not decode reaches the dispatcher, which answers
//! INVALID_ARGUMENT), the encoder, and the size check every request passes
//! at the edge.

/// A request as the edge decoded it: the message, or why its bytes are not
/// one. grpcio itself answers a request that does not decode with INTERNAL
/// (a server bug, to the caller); decoding leniently lets the dispatcher
/// answer INVALID_ARGUMENT instead, as the caller sent the bad bytes.
pub type Decoded<T> = Result<T, NotDecoded>;

/// Why a request's bytes are not the message the method takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotDecoded(pub String);

/// The request deserialiser of every generated server method: never fails,
/// so the failure reaches the dispatcher (see [`Decoded`]).
pub fn decode_request<T: protobuf::Message>(reader: grpcio::MessageReader) -> grpcio::Result<Decoded<T>> {
    Ok(grpcio::pb_de::<T>(reader).map_err(|e| NotDecoded(e.to_string())))
}

/// The request serialiser the method descriptor needs; a server never
/// sends requests, and a client would send only decoded ones.
pub fn encode_request<T: protobuf::Message>(
    req: &Decoded<T>,
    buf: &mut grpcio::GrpcSlice,
) -> grpcio::Result<()> {
    match req {
        Ok(msg) => grpcio::pb_ser(msg, buf),
        Err(NotDecoded(why)) => Err(grpcio::Error::Codec(why.clone().into())),
    }
}

/// A request message whose text fields can be measured: implemented for
/// every CSI message by build.rs, so no protobuf reflection is needed at run
/// time (reflection would add about 1.7 MiB of code and 1 MiB of resident
/// descriptors).
pub trait Bounded {
    /// The first string or bytes field (depth first, nested messages,
    /// repeated fields and maps included) longer than `limit`, as a readable
    /// field path (`volume_capability.mount.mount_flags[0]`,
    /// `parameters["key"]`) and its length. Map keys are echoed bounded;
    /// values never are (they may be secrets).
    fn oversized(&self, limit: usize) -> Option<(String, usize)>;
}

/// See [`Bounded::oversized`].
pub fn oversized_field<T: Bounded + ?Sized>(msg: &T, limit: usize) -> Option<(String, usize)> {
    msg.oversized(limit)
}
