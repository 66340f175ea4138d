//! The agent hub: which devices are connected to this process, and how to wake them.
//!
//! A message for a device is always written to its outbox in the store first; the hub only
//! *wakes* the device's connection, which then reads its outbox. So the hub holds no
//! messages, losing a wake-up costs at most a delay, and a device connected to another
//! server process is served by that process (see ARCHITECTURE.md on scaling out).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// One connected device's handle.
#[derive(Default)]
pub struct Connection {
    /// Signalled when the outbox has something new.
    pub wake: Notify,
    /// Set when the device must be disconnected (revoked).
    pub kicked: AtomicBool,
}

/// Connected devices of this process.
#[derive(Default)]
pub struct Hub {
    connections: Mutex<HashMap<i64, Arc<Connection>>>,
}

impl Hub {
    /// Registers a device's connection, replacing (and kicking) an older one.
    pub fn register(&self, device_id: i64) -> Arc<Connection> {
        let conn = Arc::new(Connection::default());
        let old = self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(device_id, conn.clone());
        if let Some(old) = old {
            old.kicked.store(true, Ordering::SeqCst);
            old.wake.notify_one();
        }
        conn
    }

    /// Removes a device's connection if it is still this one.
    pub fn unregister(&self, device_id: i64, conn: &Arc<Connection>) {
        let mut map = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&device_id).is_some_and(|c| Arc::ptr_eq(c, conn)) {
            map.remove(&device_id);
        }
    }

    /// Tells a connected device to read its outbox.
    pub fn wake(&self, device_id: i64) {
        if let Some(c) = self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&device_id)
        {
            c.wake.notify_one();
        }
    }

    /// Disconnects a device at once.
    pub fn kick(&self, device_id: i64) {
        if let Some(c) = self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&device_id)
        {
            c.kicked.store(true, Ordering::SeqCst);
            c.wake.notify_one();
        }
    }

    /// Whether the device is connected to this process.
    pub fn is_connected(&self, device_id: i64) -> bool {
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&device_id)
    }

    /// How many devices are connected.
    pub fn len(&self) -> usize {
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
