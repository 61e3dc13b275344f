//! `ferry init`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::output::Report;

#[derive(Serialize)]
pub struct Initialised {
    pub store: PathBuf,
}

impl Report for Initialised {
    fn text(&self) -> Vec<String> {
        vec![format!("initialised an empty ferry store in {}", self.store.display())]
    }
}

pub fn run(path: &Path) -> Result<Initialised> {
    ferry_store::Store::init(path)?;
    Ok(Initialised { store: path.to_owned() })
}
