Set-MailboxServer -Identity {server} -DatabaseCopyActivationDisabledAndMoveNow $true | Out-Null
$result = Get-MailboxServer -Identity {server} | Select-Object Name, DatabaseCopyActivationDisabledAndMoveNow
if (-not $result.DatabaseCopyActivationDisabledAndMoveNow) { throw 'Set-MailboxServer did not disable database copy activation' }
