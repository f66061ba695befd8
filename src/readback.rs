//! Reading tensors back to the host: one copy into a mappable buffer,
//! submitted together with all pending work (one submit), then a map.

use futures::FutureExt;

use crate::device::{Device, new_encoder};
use crate::error::{Error, Result};
use crate::pool::Storage;

impl Device {
    /// Copies the first `len` values of `storage` into a mappable buffer,
    /// submitting the pending work with it (one submit), and maps it.
    fn start_read(
        &self,
        storage: &Storage,
        len: usize,
    ) -> Result<(
        wgpu::Buffer,
        futures::channel::oneshot::Receiver<Result<()>>,
    )> {
        self.check_alive()?;
        let bytes = (len as u64 * 4).max(4);
        let staging = self.shared.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pullback readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        // As in `flush`: take, record the copy and submit under one lock.
        let mut pending = self.shared.pending.lock().unwrap();
        let mut encoder = pending
            .take()
            .unwrap_or_else(|| new_encoder(&self.shared.device));
        encoder.copy_buffer_to_buffer(storage.buffer(), 0, &staging, 0, bytes);
        self.submit(encoder);
        drop(pending);
        let (tx, rx) = futures::channel::oneshot::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r.map_err(|e| Error::Gpu(format!("reading back a tensor: {e}"))));
        });
        Ok((staging, rx))
    }

    fn finish_read(&self, staging: wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        let view = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("reading back a tensor: {e}")))?;
        let values = bytemuck::cast_slice::<u8, f32>(&view)[..len].to_vec();
        drop(view);
        staging.unmap();
        Ok(values)
    }

    /// Blocking read of `len` f32 values.
    pub(crate) fn read(&self, storage: &Storage, len: usize) -> Result<Vec<f32>> {
        let (staging, mut rx) = self.start_read(storage, len)?;
        self.wait()?;
        // The copy is done once `wait` returns, but the map callback runs on
        // whichever thread polled the device: when another thread's poll
        // collected it, it may still be on its way here. wgpu always calls a
        // map callback (with an error if the device is lost), so wait for it,
        // polling, with a deadline as a safety net.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match rx.try_recv() {
                Ok(Some(result)) => break result?,
                Ok(None) if std::time::Instant::now() < deadline => {
                    self.shared
                        .device
                        .poll(wgpu::PollType::Poll)
                        .map_err(|e| Error::DeviceLost(e.to_string()))?;
                    self.check_alive()?;
                    std::thread::yield_now();
                }
                _ => return Err(self.lost_or("the readback did not complete")),
            }
        }
        self.finish_read(staging, len)
    }

    /// Non-blocking read: polls the device without waiting and yields to
    /// the executor until the copy has landed.
    pub(crate) async fn read_async(&self, storage: &Storage, len: usize) -> Result<Vec<f32>> {
        let (staging, mut rx) = self.start_read(storage, len)?;
        let result = futures::future::poll_fn(|cx| {
            if let Err(e) = self.shared.device.poll(wgpu::PollType::Poll) {
                return std::task::Poll::Ready(Err(Error::DeviceLost(e.to_string())));
            }
            match rx.poll_unpin(cx) {
                std::task::Poll::Ready(Ok(r)) => std::task::Poll::Ready(r),
                std::task::Poll::Ready(Err(_)) => {
                    std::task::Poll::Ready(Err(self.lost_or("the readback was cancelled")))
                }
                std::task::Poll::Pending => {
                    cx.waker().wake_by_ref();
                    std::task::Poll::Pending
                }
            }
        })
        .await;
        result?;
        self.finish_read(staging, len)
    }

    fn lost_or(&self, msg: &str) -> Error {
        match self.check_alive() {
            Err(e) => e,
            Ok(()) => Error::Gpu(msg.to_string()),
        }
    }
}
