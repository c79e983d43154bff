//! [`AfterCall`]: an interceptor with only an after-hook, from a closure,
//! for either side (`server::after_call`, `client::after_call` make one).

/// An interceptor with only an after-hook, from a closure: what
/// [`server::after_call`](crate::server::after_call) and
/// [`client::after_call`](crate::client::after_call) make, for logging and
/// metrics.
pub struct AfterCall<F>(pub(crate) F);

impl<F> std::fmt::Debug for AfterCall<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfterCall").finish_non_exhaustive()
    }
}
