//! SCAFFOLD: to be written
use async_trait::async_trait;
#[async_trait]
pub trait OAuth2SessionRepository: Send {}
#[async_trait]
pub trait AccessTokenRepository: Send {}
#[async_trait]
pub trait RefreshTokenRepository: Send {}
macro_rules! implementation {
    ($r:ty) => {
        impl OAuth2SessionRepository for $r {}
        impl AccessTokenRepository for $r {}
        impl RefreshTokenRepository for $r {}
    };
}
super::for_each_backend!(implementation);
