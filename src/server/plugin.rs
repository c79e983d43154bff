//! The seam where parts of a server that are not handlers plug in: the
//! standard services (`src/services/`) add themselves to the services a
//! server hosts when it binds, learn when it starts shutting down, and are
//! found again by type. The server knows nothing of any of them.

use std::any::Any;
use std::sync::Arc;

use crate::server::service::Registry;

/// A part of a server that is not a handler.
pub(crate) trait Plugin: Any + Send + Sync {
    /// The server is binding with `registry`'s services: add services of
    /// its own, knowing the others.
    fn install(&self, registry: &mut Registry);

    /// Every plugin has installed its services: `registry` is what the
    /// server hosts.
    fn installed(&self, registry: &Registry) {
        let _ = registry;
    }

    /// The server begins its graceful shutdown (before in-flight calls
    /// drain).
    fn shutting_down(&self) {}

    /// Itself, to be found by type.
    fn as_any(&self) -> &dyn Any;
}

/// A server's plugins, at most one of each type.
#[derive(Clone, Default)]
pub(crate) struct Plugins {
    plugins: Vec<Arc<dyn Plugin>>,
}

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugins")
            .field("count", &self.plugins.len())
            .finish()
    }
}

impl Plugins {
    /// Adds `plugin`, replacing one of the same type.
    pub(crate) fn set<P: Plugin>(&mut self, plugin: P) {
        self.remove::<P>();
        self.plugins.push(Arc::new(plugin));
    }

    /// Removes the plugin of type `P`, if any.
    pub(crate) fn remove<P: Plugin>(&mut self) {
        self.plugins.retain(|p| !p.as_any().is::<P>());
    }

    /// The plugin of type `P`, if any.
    #[cfg_attr(not(feature = "health"), allow(dead_code))]
    pub(crate) fn get<P: Plugin>(&self) -> Option<&P> {
        self.plugins
            .iter()
            .find_map(|p| p.as_any().downcast_ref::<P>())
    }

    /// Lets every plugin add its services, then see them all.
    pub(crate) fn install(&self, registry: &mut Registry) {
        for p in &self.plugins {
            p.install(registry);
        }
        for p in &self.plugins {
            p.installed(registry);
        }
    }

    /// Tells every plugin the server is shutting down.
    pub(crate) fn shutting_down(&self) {
        for p in &self.plugins {
            p.shutting_down();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct A(u8);
    impl Plugin for A {
        fn install(&self, _: &mut Registry) {}
        fn as_any(&self) -> &dyn Any {
            self
        }
    }
    struct B;
    impl Plugin for B {
        fn install(&self, _: &mut Registry) {}
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    #[test]
    fn one_plugin_per_type_found_by_type() {
        let mut p = Plugins::default();
        p.set(A(1));
        p.set(B);
        p.set(A(2));
        assert_eq!(p.get::<A>().map(|a| a.0), Some(2));
        assert!(p.get::<B>().is_some());
        p.remove::<B>();
        assert!(p.get::<B>().is_none());
        assert_eq!(p.plugins.len(), 1);
    }
}
