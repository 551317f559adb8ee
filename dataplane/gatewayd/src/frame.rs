//! The mbuf as the core's [`Frame`]: a newtype, so neither the core nor the FFI crate needs to
//! know the other.

use trapeze_core::pipeline::Frame;
use trapeze_dpdk::Mbuf;

/// An owned mbuf the pipeline can work on. Multi-segment mbufs never get here: the receive path
/// drops and counts them (the mempool's data room holds a whole frame).
#[derive(Debug)]
pub(crate) struct MbufFrame<'e>(pub(crate) Mbuf<'e>);

impl Frame for MbufFrame<'_> {
    #[inline]
    fn data(&self) -> &[u8] {
        self.0.data()
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        self.0.data_mut()
    }
    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        self.0.prepend(n)
    }
    #[inline]
    fn adj(&mut self, n: usize) -> bool {
        self.0.adj(n)
    }
    #[inline]
    fn set_len(&mut self, len: usize) -> bool {
        self.0.set_len(len)
    }
}
