//! Transfers: stock leaves the sending location at once and is in transit at the receiving
//! one until it arrives, matched per (transfer, sku, destination).

use super::movements::Movement;
use super::{ApplyError, Ledger, add};
use crate::domain::{LocationId, Sku, TransferId};

impl Ledger {
    /// `Op::TransferOut`: takes the stock out of `from` and puts it in transit at `to`.
    #[inline]
    pub(super) fn transfer_out(
        &mut self,
        transfer: &TransferId,
        from: &LocationId,
        to: &LocationId,
        sku: &Sku,
        qty: i64,
    ) -> Result<(), ApplyError> {
        let from_slot = self.slot_for(from, sku);
        let to_slot = self.slot_for(to, sku);
        let (s, l) = self.slot_keys[to_slot as usize];
        let key = (transfer.clone(), s, l);
        let outstanding = self.transfers.get(&key).copied().unwrap_or(0);
        let outstanding = add(outstanding, qty).ok_or_else(|| self.overflow(to_slot))?;
        let in_transit = add(self.cells[to_slot as usize].pos.in_transit, qty)
            .ok_or_else(|| self.overflow(to_slot))?;
        self.move_on_hand(from_slot, -qty, Movement::TransferOut as u16)?;
        self.cells[to_slot as usize].pos.in_transit = in_transit;
        self.transfers.insert(key, outstanding);
        self.mark(to_slot);
        Ok(())
    }

    /// `Op::TransferIn`: puts the stock on hand at `to` and takes what was open off in transit;
    /// arriving more than was sent is counted as an unmatched transfer.
    #[inline]
    pub(super) fn transfer_in(
        &mut self,
        transfer: &TransferId,
        to: &LocationId,
        sku: &Sku,
        qty: i64,
    ) -> Result<(), ApplyError> {
        let to_slot = self.slot_for(to, sku);
        let (s, l) = self.slot_keys[to_slot as usize];
        let key = (transfer.clone(), s, l);
        let outstanding = self.transfers.get(&key).copied().unwrap_or(0);
        let matched = outstanding.min(qty);
        if matched < qty {
            self.exceptions.unmatched_transfers += 1;
        }
        self.move_on_hand(to_slot, qty, Movement::TransferIn as u16)?;
        self.cells[to_slot as usize].pos.in_transit -= matched;
        if outstanding - matched > 0 {
            self.transfers.insert(key, outstanding - matched);
        } else {
            self.transfers.remove(&key);
        }
        Ok(())
    }
}
