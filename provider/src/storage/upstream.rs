//! SCAFFOLD: to be written
use async_trait::async_trait;
#[async_trait]
pub trait UpstreamProviderRepository: Send {}
#[async_trait]
pub trait UpstreamLinkRepository: Send {}
#[async_trait]
pub trait UpstreamSessionRepository: Send {}
macro_rules! implementation {
    ($r:ty) => {
        impl UpstreamProviderRepository for $r {}
        impl UpstreamLinkRepository for $r {}
        impl UpstreamSessionRepository for $r {}
    };
}
super::for_each_backend!(implementation);
