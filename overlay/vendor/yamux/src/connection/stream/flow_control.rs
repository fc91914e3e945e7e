use std::{cmp, sync::Arc};

use parking_lot::Mutex;
use web_time::Instant;

use crate::{connection::rtt::Rtt, Config, ConnectionError, DEFAULT_CREDIT};

/// Patched: the most a new stream's receive window starts at, whatever the connection learned
/// ([`Windows::learned`]): 16 MiB, beyond any chunk answer of cinemesh's.
pub const MAX_LEARNED_STREAM_WINDOW: u32 = 16 * crate::MIB as u32;

/// Patched: what a connection's streams share about their receive windows.
#[derive(Debug, Default)]
pub(crate) struct Windows {
    /// The sum of the bytes by which all streams' `max_receive_window` have each exceeded
    /// [`DEFAULT_CREDIT`] (the published crate's `accumulated_max_stream_windows`). Used to enforce
    /// [`Config::max_connection_receive_window`].
    pub(crate) accumulated: usize,
    /// The largest `max_receive_window` any stream of the connection has tuned itself to, at least
    /// [`Config::set_outbound_stream_window`]'s. A stream this side opens starts there (at most
    /// [`MAX_LEARNED_STREAM_WINDOW`]) and grants the remote the credit beyond [`DEFAULT_CREDIT`] with
    /// its first window update, instead of tuning itself up again from 256 KiB: a protocol that opens
    /// one stream per request (libp2p's request-response) would otherwise start every answer at 256
    /// KiB per round trip. Streams the remote opens start at [`DEFAULT_CREDIT`], as published: they
    /// are not given credit before their reader has proved it reads.
    pub(crate) learned: u32,
}

#[derive(Debug)]
pub(crate) struct FlowController {
    config: Arc<Config>,
    last_window_update: Instant,
    /// See [`Connection::rtt`].
    rtt: Rtt,
    /// See [`Connection::accumulated_max_stream_windows`] and [`Windows`].
    accumulated_max_stream_windows: Arc<Mutex<Windows>>,
    receive_window: u32,
    max_receive_window: u32,
    send_window: u32,
    /// Patched: the window started above [`DEFAULT_CREDIT`] and its first update, which grants
    /// the difference, is yet to be sent (it must not count as a fast round for the tuning).
    opening: bool,
}

impl FlowController {
    pub(crate) fn new(
        receive_window: u32,
        send_window: u32,
        accumulated_max_stream_windows: Arc<Mutex<Windows>>,
        rtt: Rtt,
        config: Arc<Config>,
        outbound: bool,
    ) -> Self {
        // Patched: an outbound stream starts at what the connection learned, within the connection's limit (as the
        // tuning below keeps it).
        let max_receive_window = {
            let mut windows = accumulated_max_stream_windows.lock();
            let spare = config
                .max_connection_receive_window
                .unwrap_or(usize::MAX)
                .saturating_sub(config.max_num_streams * DEFAULT_CREDIT as usize)
                .saturating_sub(windows.accumulated);
            let start = if outbound { windows.learned } else { DEFAULT_CREDIT }
                .min(MAX_LEARNED_STREAM_WINDOW)
                .min(DEFAULT_CREDIT.saturating_add(spare.try_into().unwrap_or(u32::MAX)))
                .max(DEFAULT_CREDIT);
            windows.accumulated += (start - DEFAULT_CREDIT) as usize;
            start
        };
        Self {
            receive_window,
            send_window,
            config,
            rtt,
            accumulated_max_stream_windows,
            max_receive_window,
            last_window_update: Instant::now(),
            opening: max_receive_window > DEFAULT_CREDIT,
        }
    }

    /// Calculate the number of additional window bytes the receiving side (local) should grant the
    /// sending side (remote) via a window update message.
    ///
    /// Returns `None` if too small to justify a window update message.
    pub(crate) fn next_window_update(&mut self, buffer_len: usize) -> Option<u32> {
        self.assert_invariants(buffer_len);

        let bytes_received = self.max_receive_window - self.receive_window;
        let mut next_window_update =
            bytes_received.saturating_sub(buffer_len.try_into().unwrap_or(u32::MAX));

        // Don't send an update in case half or more of the window is still available to the sender.
        if next_window_update < self.max_receive_window / 2 {
            return None;
        }

        log::trace!(
            "received {} mb in {} seconds ({} mbit/s)",
            next_window_update as f64 / crate::MIB as f64,
            self.last_window_update.elapsed().as_secs_f64(),
            next_window_update as f64 / crate::MIB as f64 * 8.0
                / self.last_window_update.elapsed().as_secs_f64()
        );

        // Auto-tuning `max_receive_window`
        //
        // The ideal `max_receive_window` is equal to the bandwidth-delay-product (BDP), thus
        // allowing the remote sender to exhaust the entire available bandwidth on a single stream.
        // Choosing `max_receive_window` too small prevents the remote sender from exhausting the
        // available bandwidth. Choosing `max_receive_window` to large is wasteful and delays
        // backpressure from the receiver to the sender on the stream.
        //
        // In case the remote sender has exhausted half or more of its credit in less than 2
        // round-trips, try to double `max_receive_window`.
        //
        // For simplicity `max_receive_window` is never decreased.
        //
        // This implementation is heavily influenced by QUIC. See document below for rational on the
        // above strategy.
        //
        // https://docs.google.com/document/d/1F2YfdDXKpy20WVKJueEf4abn_LVZHhMUMS5gX6Pgjl4/edit?usp=sharing
        // Patched: not on the update that grants a learned window (see `Windows::learned`).
        if !std::mem::take(&mut self.opening)
            && self
                .rtt
                .get()
                .map(|rtt| self.last_window_update.elapsed() < rtt * 2)
                .unwrap_or(false)
        {
            let mut accumulated_max_stream_windows = self.accumulated_max_stream_windows.lock();

            // Ideally one can just double it:
            let new_max = self.max_receive_window.saturating_mul(2);

            // But one has to consider the configured connection limit:
            let new_max = {
                let connection_limit: usize = self.max_receive_window as usize +
                    // the overall configured conneciton limit
                    (self.config.max_connection_receive_window.unwrap_or(usize::MAX)
                    // minus the minimum amount of window guaranteed to each stream
                    - self.config.max_num_streams * DEFAULT_CREDIT as usize
                    // minus the amount of bytes beyond the minimum amount (`DEFAULT_CREDIT`)
                    // already allocated by this and other streams on the connection.
                    - accumulated_max_stream_windows.accumulated);

                cmp::min(new_max, connection_limit.try_into().unwrap_or(u32::MAX))
            };

            // Account for the additional credit on the accumulated connection counter.
            accumulated_max_stream_windows.accumulated += (new_max - self.max_receive_window) as usize;
            // Patched: new streams start here.
            accumulated_max_stream_windows.learned =
                accumulated_max_stream_windows.learned.max(new_max);
            drop(accumulated_max_stream_windows);

            log::debug!(
                "old window_max: {} mb, new window_max: {} mb",
                self.max_receive_window as f64 / crate::MIB as f64,
                new_max as f64 / crate::MIB as f64
            );

            self.max_receive_window = new_max;

            // Recalculate `next_window_update` with the new `max_receive_window`.
            let bytes_received = self.max_receive_window - self.receive_window;
            next_window_update =
                bytes_received.saturating_sub(buffer_len.try_into().unwrap_or(u32::MAX));
        }

        self.last_window_update = Instant::now();
        self.receive_window += next_window_update;

        self.assert_invariants(buffer_len);

        Some(next_window_update)
    }

    fn assert_invariants(&self, buffer_len: usize) {
        if !cfg!(debug_assertions) {
            return;
        }

        let config = &self.config;
        let rtt = self.rtt.get();
        let accumulated_max_stream_windows = self.accumulated_max_stream_windows.lock().accumulated;

        assert!(
            buffer_len <= self.max_receive_window as usize,
            "The current buffer size never exceeds the maximum stream receive window."
        );
        assert!(
            self.receive_window <= self.max_receive_window,
            "The current window never exceeds the maximum."
        );
        assert!(
            (self.max_receive_window - DEFAULT_CREDIT) as usize
                <= config.max_connection_receive_window.unwrap_or(usize::MAX)
                    - config.max_num_streams * DEFAULT_CREDIT as usize,
            "The maximum never exceeds its maximum portion of the configured connection limit."
        );
        assert!(
            (self.max_receive_window - DEFAULT_CREDIT) as usize
                <= accumulated_max_stream_windows,
            "The amount by which the stream maximum exceeds DEFAULT_CREDIT is tracked in accumulated_max_stream_windows."
        );
        // Patched: or where it started, at the configured outbound window.
        if rtt.is_none() {
            assert!(
                self.max_receive_window
                    <= DEFAULT_CREDIT.max(config.outbound_stream_window.min(MAX_LEARNED_STREAM_WINDOW)),
                "The maximum is only increased iff an rtt measurement is available."
            );
        }
    }

    pub(crate) fn send_window(&self) -> u32 {
        self.send_window
    }

    pub(crate) fn consume_send_window(&mut self, i: u32) -> Result<(), ConnectionError> {
        self.send_window = self
            .send_window
            .checked_sub(i)
            .ok_or(ConnectionError::InvalidWindowUpdate)?;
        Ok(())
    }

    pub(crate) fn increase_send_window_by(&mut self, i: u32) -> Result<(), ConnectionError> {
        self.send_window = self
            .send_window
            .checked_add(i)
            .ok_or(ConnectionError::InvalidWindowUpdate)?;
        Ok(())
    }

    pub(crate) fn consume_receive_window(&mut self, i: u32) -> Result<(), ConnectionError> {
        self.receive_window = self
            .receive_window
            .checked_sub(i)
            .ok_or(ConnectionError::InvalidWindowUpdate)?;
        Ok(())
    }
}

impl Drop for FlowController {
    fn drop(&mut self) {
        let mut accumulated_max_stream_windows = self.accumulated_max_stream_windows.lock();

        debug_assert!(
            accumulated_max_stream_windows.accumulated
                >= (self.max_receive_window - DEFAULT_CREDIT) as usize,
            "{} {}",
            accumulated_max_stream_windows.accumulated,
            self.max_receive_window
        );

        accumulated_max_stream_windows.accumulated -=
            (self.max_receive_window - DEFAULT_CREDIT) as usize;
    }
}
