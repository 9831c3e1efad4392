//! SCAFFOLD: to be written
use async_trait::async_trait;
#[async_trait]
pub trait BrowserSessionRepository: Send {}
macro_rules! implementation {
    ($r:ty) => {
        impl BrowserSessionRepository for $r {}
    };
}
super::for_each_backend!(implementation);
