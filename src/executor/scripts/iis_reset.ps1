$reset = Invoke-Command -ComputerName {server} -Authentication {authentication} -ArgumentList {noforce} -ScriptBlock {
    param($noforceOnly)
    # Recycle the entire IIS service. /noforce stops it gracefully, and fails precisely when IIS is hung: then
    # iisreset without it, which ends what will not stop, unless the runbook's page says "iisreset /noforce".
    $output = iisreset /noforce 2>&1 | Out-String
    $mode = '/noforce'
    if ($LASTEXITCODE -ne 0 -and $noforceOnly -ne 'true') {
        $output = $output + (iisreset 2>&1 | Out-String)
        $mode = 'forced'
    }
    [pscustomobject]@{ ExitCode = $LASTEXITCODE; Output = $output.Trim(); Mode = $mode }
}
if ($reset.ExitCode -ne 0) { throw ('iisreset exited with code {0}: {1}' -f $reset.ExitCode, $reset.Output) }
$result = [pscustomobject]@{ Server = {server}; ExitCode = $reset.ExitCode; Output = $reset.Output; Mode = $reset.Mode }
