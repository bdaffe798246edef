//! The protobuf codec of fathom's services: tonic's prost codec, except
//! that a request body that is not the expected message is the caller's
//! fault. tonic answers it with INTERNAL, which clients (rightly) retry;
//! here it is INVALID_ARGUMENT, so a sender sets such a batch aside instead
//! of retrying it forever.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, ProstCodec};
use tonic::{Code, Status};

/// The status a message that does not decode is answered with.
pub trait DecodeFailure {
    /// INVALID_ARGUMENT for requests (the sender's bytes are bad and stay
    /// bad), INTERNAL for responses (the client's view of a server fault).
    const CODE: Code;
}

impl DecodeFailure for crate::RecordBatch {
    const CODE: Code = Code::InvalidArgument;
}

impl DecodeFailure for crate::Ack {
    const CODE: Code = Code::Internal;
}

/// tonic's [`ProstCodec`] with [`DecodeFailure`] codes.
pub struct FathomCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for FathomCodec<T, U> {
    fn default() -> Self {
        FathomCodec(ProstCodec::default())
    }
}

impl<T, U> Codec for FathomCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + DecodeFailure + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = FathomDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        FathomDecoder(PhantomData)
    }
}

/// Decodes `U` as tonic's prost decoder does, answering failures with
/// `U::CODE`.
pub struct FathomDecoder<U>(PhantomData<U>);

impl<U: Message + Default + DecodeFailure> Decoder for FathomDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| {
            Status::new(U::CODE, format!("cannot decode the {} message: {e}", type_name::<U>()))
        })
    }
}

fn type_name<U>() -> &'static str {
    let full = std::any::type_name::<U>();
    full.rsplit("::").next().unwrap_or(full)
}
