/// What this build of Fulcrum is (CLI `version`, metrics `fulcrum_build_info`).
public enum FulcrumBuild {
    public static let version = "0.1.0"
}
