# cmdlets: Get-MailboxServer, Set-MailboxServer
Set-MailboxServer -Identity {server} -DatabaseCopyActivationDisabledAndMoveNow $false | Out-Null
$result = Get-MailboxServer -Identity {server} | Select-Object Name, DatabaseCopyActivationDisabledAndMoveNow
if ($result.DatabaseCopyActivationDisabledAndMoveNow) { throw 'Set-MailboxServer did not enable database copy activation' }
