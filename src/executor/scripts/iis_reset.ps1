$reset = Invoke-Command -ComputerName {server} -Authentication {authentication} -ScriptBlock {
    # Recycle the entire IIS service. /noforce stops it gracefully, and fails precisely when IIS is hung: then
    # iisreset without it, which ends what will not stop.
    $output = iisreset /noforce 2>&1 | Out-String
    $mode = '/noforce'
    if ($LASTEXITCODE -ne 0) {
        $output = $output + (iisreset 2>&1 | Out-String)
        $mode = 'forced'
    }
    [pscustomobject]@{ ExitCode = $LASTEXITCODE; Output = $output.Trim(); Mode = $mode }
}
if ($reset.ExitCode -ne 0) { throw ('iisreset exited with code {0}: {1}' -f $reset.ExitCode, $reset.Output) }
$result = [pscustomobject]@{ Server = {server}; ExitCode = $reset.ExitCode; Output = $reset.Output; Mode = $reset.Mode }
