//! The restore flags shared by `riposte agent ctl quarantine restore` and
//! `riposte admin quarantine restore`.

/// What a restore does where a file is already at the target path.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct OnConflict {
    /// Where a file is in the way: replace it.
    #[arg(long, conflicts_with = "rename")]
    replace: bool,
    /// Where a file is in the way: restore beside it as NAME.restored.
    #[arg(long)]
    rename: bool,
}

impl OnConflict {
    /// The policy's name in the agent's and the API's requests (`refuse` by default).
    pub fn policy(self) -> &'static str {
        if self.replace {
            "replace"
        } else if self.rename {
            "rename"
        } else {
            "refuse"
        }
    }
}
