//! SCAFFOLD: to be written
use async_trait::async_trait;
#[async_trait]
pub trait CompatSessionRepository: Send {}
#[async_trait]
pub trait CompatTokenRepository: Send {}
#[async_trait]
pub trait CompatSsoLoginRepository: Send {}
macro_rules! implementation {
    ($r:ty) => {
        impl CompatSessionRepository for $r {}
        impl CompatTokenRepository for $r {}
        impl CompatSsoLoginRepository for $r {}
    };
}
super::for_each_backend!(implementation);
