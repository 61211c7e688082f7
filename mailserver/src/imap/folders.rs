//! Changing folders: CREATE (RFC 3501 §6.3.3, with missing parents), DELETE (§6.3.4), RENAME
//! (§6.3.5, the inbox's rule), SUBSCRIBE and UNSUBSCRIBE (§6.3.6-7).

use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::Code;

use super::extended::Extension;
use super::mailbox::mailbox_name;
use super::reply::{self, CommandError};
use super::session::{Outcome, Session};
use crate::store::FolderError;

/// The wire answer to a refused folder change (response codes of RFC 5530 and RFC 9051).
fn folder_error(err: FolderError) -> CommandError {
    let (code, text) = match err {
        FolderError::Store(store) => return CommandError::Store(store),
        FolderError::Exists => ("ALREADYEXISTS", "A folder with that name exists"),
        FolderError::NotFound => ("NONEXISTENT", "No such folder"),
        FolderError::HasChildren => (
            "HASCHILDREN",
            "The folder has subfolders; delete them first",
        ),
        FolderError::Inbox => ("CANNOT", "The inbox cannot be deleted"),
        FolderError::SpecialUseTaken => ("USEATTR", "Another folder already has that use"),
        FolderError::TooMany => ("LIMIT", "Too many folders"),
        FolderError::InvalidName(why) => ("CANNOT", why),
    };
    CommandError::no(Some(code), text)
}

impl Session {
    /// CREATE, with the RFC 6154 use of CREATE-SPECIAL-USE when the line had one.
    pub(super) async fn create(&mut self, tag: Tag<'static>, mailbox: &Mailbox<'_>) -> Outcome {
        let special_use = match self.extension.take() {
            Some(Extension::CreateUse(Ok(special_use))) => Some(special_use),
            Some(Extension::CreateUse(Err(attribute))) => {
                return Err(CommandError::no(
                    Some("USEATTR"),
                    format!("A folder cannot be created with {attribute}"),
                ));
            }
            None => None,
        };
        let mailbox_id = self.account()?.mailbox_id;
        let name = mailbox_name(mailbox)?;
        self.ctx
            .store
            .create_folder(mailbox_id, &name, special_use)
            .await
            .map_err(folder_error)?;
        Ok(reply::tagged_ok(tag, None, "CREATE completed"))
    }

    pub(super) async fn delete(&mut self, tag: Tag<'static>, mailbox: &Mailbox<'_>) -> Outcome {
        let mailbox_id = self.account()?.mailbox_id;
        let name = mailbox_name(mailbox)?;
        self.ctx
            .store
            .delete_folder(mailbox_id, &name)
            .await
            .map_err(folder_error)?;
        // Its messages are gone: the folder this session had open is closed, as SELECT of
        // another would (RFC 7162's CLOSED says so), rather than left showing deleted mail.
        if self
            .selected
            .as_ref()
            .is_some_and(|s| s.folder.name == name)
        {
            self.selected = None;
            self.push_status(reply::untagged_ok(
                Some(Code::Closed),
                "The selected folder was deleted",
            ));
        }
        Ok(reply::tagged_ok(tag, None, "DELETE completed"))
    }

    pub(super) async fn rename(
        &mut self,
        tag: Tag<'static>,
        from: &Mailbox<'_>,
        to: &Mailbox<'_>,
    ) -> Outcome {
        let mailbox_id = self.account()?.mailbox_id;
        let from = mailbox_name(from)?;
        let to = mailbox_name(to)?;
        let renamed = self
            .ctx
            .store
            .rename_folder(mailbox_id, &from, &to)
            .await
            .map_err(folder_error)?;
        // The selected folder keeps its id; its name is what the session shows from now on.
        if let Some(selected) = self.selected.as_mut()
            && selected.folder.id == renamed.id
        {
            selected.folder.name = renamed.name;
        }
        Ok(reply::tagged_ok(tag, None, "RENAME completed"))
    }

    pub(super) async fn subscribe(
        &mut self,
        tag: Tag<'static>,
        mailbox: &Mailbox<'_>,
        subscribed: bool,
    ) -> Outcome {
        let mailbox_id = self.account()?.mailbox_id;
        let name = mailbox_name(mailbox)?;
        if !self
            .ctx
            .store
            .set_subscribed(mailbox_id, &name, subscribed)
            .await?
        {
            return Err(CommandError::no(Some("NONEXISTENT"), "No such folder"));
        }
        Ok(reply::tagged_ok(
            tag,
            None,
            if subscribed {
                "SUBSCRIBE completed"
            } else {
                "UNSUBSCRIBE completed"
            },
        ))
    }
}
