$result = Get-MailboxServer -Identity {server} | Select-Object Name, DatabaseCopyActivationDisabledAndMoveNow
Set-MailboxServer -Identity {server} -DatabaseCopyActivationDisabledAndMoveNow $true | Out-Null
$after = Get-MailboxServer -Identity {server}
if (-not $after.DatabaseCopyActivationDisabledAndMoveNow) { throw 'Set-MailboxServer did not disable database copy activation' }
