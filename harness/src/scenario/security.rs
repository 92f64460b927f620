//! (being written)

use super::Ctx;

pub async fn run(_ctx: &mut Ctx<'_, '_>) {}
