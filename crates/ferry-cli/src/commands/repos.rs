//! `ferry repos`.

use anyhow::Result;
use ferry_store::Store;
use serde::Serialize;

use crate::output::Report;

#[derive(Serialize)]
pub struct Repository {
    pub name: String,
    pub created: i64,
    pub public: bool,
}

#[derive(Serialize)]
#[serde(transparent)]
pub struct Repositories(pub Vec<Repository>);

impl Report for Repositories {
    fn text(&self) -> Vec<String> {
        self.0.iter().map(|r| r.name.clone()).collect()
    }
}

pub fn run(store: &Store) -> Result<Repositories> {
    Ok(Repositories(store.repos()?.into_iter().map(|r| Repository { name: r.name, created: r.created, public: r.public }).collect()))
}
